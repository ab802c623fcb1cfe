"""hqshm on a real NVIDIA node: the GPUs `nvidia-smi` reports are the pool a worker offers, each
task sees only the GPUs it was given, and GPU requests are enforced (whole GPUs are exclusive,
halves share one).

These tests need a real GPU and driver, so they are skipped wherever `nvidia-smi` answers with no
GPU (CI, laptops). On a GPU node: `pytest tests/integration/test_real_gpus.py`. Where torch is
installed, the tasks also ask CUDA itself what they can see.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import HqEnv, hq_executable
from pyapi_functions import FUNCTIONS_PATH, gpu_view

from hqshm import Client, Job, ResourceRequest


def nvidia_indices() -> list[str]:
    """The indices `nvidia-smi` lists; none where it is missing, fails or hangs."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        out = subprocess.run([tool, "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] \
        if out.returncode == 0 else []


GPUS = nvidia_indices()
HAS_TORCH = importlib.util.find_spec("torch") is not None
pytestmark = pytest.mark.skipif(not GPUS, reason="no NVIDIA GPU answers nvidia-smi here")


@pytest.fixture(autouse=True)
def no_visibility_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection must come from the driver, not from a variable the caller happened to set."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def gpu_worker(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=None, args=["--detect-resources=all"])


def test_hwdetect_lists_the_gpus_nvidia_smi_reports() -> None:
    out = subprocess.run([*hq_executable(), "worker", "hwdetect", "--output-mode=json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pools = {pool["name"]: pool for pool in json.loads(out.stdout)["resources"]}
    assert pools["gpus/nvidia"] == {"kind": "list", "name": "gpus/nvidia", "values": GPUS}


def test_a_worker_offers_its_gpus(hq_env: HqEnv) -> None:
    gpu_worker(hq_env)
    [worker] = hq_env.json(["worker", "info", "1"])
    pools = {pool["name"]: pool for pool in worker["configuration"]["resources"]["resources"]}
    assert pools["gpus/nvidia"]["values"] == GPUS
    assert f"gpus/nvidia {len(GPUS)}" in hq_env.command(["worker", "list"])


def test_each_program_task_sees_only_its_gpu(hq_env: HqEnv) -> None:
    gpu_worker(hq_env)
    probe = "import torch; print(torch.cuda.device_count())" if HAS_TORCH else "print(1)"
    script = (f'echo "$CUDA_VISIBLE_DEVICES|$HQ_RESOURCE_VALUES_gpus_nvidia|$CUDA_DEVICE_ORDER|"'
              f'"$({sys.executable} -c \'{probe}\')"')
    count = 2 * len(GPUS)
    hq_env.command(["submit", "--resource", "gpus/nvidia=1", f"--array=1-{count}", "--wait",
                    "--", "bash", "-c", script], timeout=300)
    for task in range(1, count + 1):
        visible, values, order, devices = \
            (hq_env.work / "job-1" / f"{task}.stdout").read_text().strip().split("|")
        assert visible in GPUS and values == visible and order == "PCI_BUS_ID"
        assert devices == "1"


def task_span(path: Path) -> tuple[float, float]:
    start, end = path.read_text().split()
    return float(start), float(end)


@pytest.mark.parametrize(("amount", "overlap"), [("1", False), ("0.5", True)])
def test_gpu_requests_are_enforced(hq_env: HqEnv, amount: str, overlap: bool) -> None:
    """On one GPU: two tasks asking for all of it run one after the other, two halves together."""
    hq_env.start_server()
    hq_env.start_worker(cpus=2, args=["--detect-resources=gpus/nvidia"],
                        env={"CUDA_VISIBLE_DEVICES": GPUS[0]})
    script = 'echo "$(date +%s.%N) $(sleep 1.5; date +%s.%N)"'
    hq_env.command(["submit", "--resource", f"gpus/nvidia={amount}", "--array=1-2", "--wait",
                    "--", "bash", "-c", script], timeout=120)
    (a_start, a_end), (b_start, b_end) = (task_span(hq_env.work / "job-1" / f"{t}.stdout")
                                          for t in (1, 2))
    assert (a_start < b_end and b_start < a_end) is overlap


def test_a_function_task_given_a_gpu_reaches_it(hq_env: HqEnv, client: Client) -> None:
    hq_env.start_worker(cpus=None, args=["--detect-resources=all"])
    job = Job(default_env=FUNCTIONS_PATH)
    paths = [hq_env.work / f"view{i}.json" for i in range(2)]
    for path in paths:
        job.function(gpu_view, args=(str(path),),
                     resources=ResourceRequest(resources={"gpus/nvidia": 1}))
    assert client.wait_for_jobs([client.submit(job)])
    for path in paths:
        view = json.loads(path.read_text())
        assert view["CUDA_VISIBLE_DEVICES"] in GPUS
        assert view["HQ_RESOURCE_VALUES_gpus_nvidia"] == view["CUDA_VISIBLE_DEVICES"]
        if HAS_TORCH:
            assert view["devices"] == 1 and view["sum"] == 1000.0
