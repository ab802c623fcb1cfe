"""Benchmark modules are imported by path (--import-mode=importlib): make their helpers importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
