"""`pip install .` (not editable) installs every package of the source tree: a package missing
from pyproject.toml's list works in an editable install, so the test suite, which runs from
one, would not notice that a regular install lacks it (the automatic allocation's did)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _source_packages() -> set[str]:
    """Every directory with an ``__init__.py`` under the installed roots, by import name."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    names = set()
    for name, folder in {"hqshm": "hqshm", **config["package-dir"]}.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            parts = init.parent.relative_to(base).parts
            names.add(".".join((name, *parts)))
    # A folder mapped to a name of its own is installed under that name only.
    mapped = {folder.replace("/", ".") for folder in config["package-dir"].values()}
    return {n for n in names if not any(n == m or n.startswith(m + ".") for m in mapped)}


def test_every_package_of_the_tree_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    missing = sorted(_source_packages() - listed)
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_the_checkout_folder_finds_its_cluster_layer(tmp_path: Path) -> None:
    """A script run from the repository's root imports the checkout's hqshm/ folder, not the
    installed package (after `pip install .`), and that folder has no cluster/: it finds the
    repository's. ``-S`` leaves out site-packages and with them the editable install's own
    mapping, as a regular install's absence of it would."""
    import subprocess
    import sys

    code = ("import hqshm.cluster.ids, hqshm.cluster, sys; "
            "print(hqshm.cluster.__file__, hqshm.cluster.ids.__name__)")
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(ROOT / "cluster" / "__init__.py"), "hqshm.cluster.ids"]
