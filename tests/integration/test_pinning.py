"""Pinning is real: what a task reads about itself matches what the node allocated.

Each task reports `Cpus_allowed_list` and `Mems_allowed_list` from /proc/self/status and its
memory policy (get_mempolicy through the C module) next to `HQ_CPUS`. On a machine with one NUMA
node every task's CPUs lie in node 0, so each task is bound there; the test reads the node of
each allocated CPU from /sys, so it holds on multi-node machines too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness import HqEnv

PROBE = (
    "import json, os\n"
    "from hqshm.node import affinity\n"
    "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines()"
    " if ':\\t' in l)\n"
    "mode, nodes = affinity.get_memory_policy()\n"
    "print(json.dumps({'hq_cpus': os.environ.get('HQ_CPUS'),"
    " 'cpus': status['Cpus_allowed_list'].strip(), 'mems': status['Mems_allowed_list'].strip(),"
    " 'mode': mode, 'nodes': nodes, 'affinity': sorted(os.sched_getaffinity(0))}))\n"
)


def cpu_list(text: str) -> list[int]:
    ids: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        ids.extend(range(int(low), int(high or low) + 1))
    return ids


def numa_of(cpu: int) -> int:
    for node in Path("/sys/devices/system/node").glob("node[0-9]*"):
        if cpu in cpu_list((node / "cpulist").read_text().strip()):
            return int(node.name[4:])
    return 0


def probes(env: HqEnv, job: int) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((env.work / f"job-{job}").glob("*.stdout"))]


def test_tasks_see_exactly_their_cpus_and_memory_bound_to_their_node(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    hq_env.command(["submit", "--array", "1-4", "--wait", "--", sys.executable, "-c", PROBE])
    hq_env.command(["submit", "--cpus", "2", "--wait", "--", sys.executable, "-c", PROBE])
    for job in (1, 2):
        for probe in probes(hq_env, job):
            allocated = cpu_list(probe["hq_cpus"])
            assert cpu_list(probe["cpus"]) == allocated == probe["affinity"]
            node = {numa_of(c) for c in allocated}
            if len(node) == 1:
                assert probe["mode"] == 2  # MPOL_BIND
                assert probe["nodes"] == sorted(node)
                assert node <= set(cpu_list(probe["mems"]))
    assert len(probes(hq_env, 2)[0]["affinity"]) == 2


def test_no_pin_leaves_affinity_and_memory_policy_alone(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1, args=["--no-pin"])
    hq_env.command(["submit", "--wait", "--", sys.executable, "-c", PROBE])
    [probe] = probes(hq_env, 1)
    assert probe["mode"] == 0  # MPOL_DEFAULT
    assert len(probe["affinity"]) == len(__import__("os").sched_getaffinity(0))


def test_memory_binding_can_be_preferred_or_left_alone(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1, args=["--memory-binding", "prefer"])
    hq_env.command(["submit", "--wait", "--", sys.executable, "-c", PROBE])
    [probe] = probes(hq_env, 1)
    assert probe["mode"] == 1  # MPOL_PREFERRED
    hq_env.command(["worker", "stop", "1"])
    hq_env.start_worker(cpus=1, args=["--memory-binding", "none"])
    hq_env.command(["submit", "--wait", "--", sys.executable, "-c", PROBE])
    [probe] = probes(hq_env, 2)
    assert probe["mode"] == 0  # MPOL_DEFAULT
    assert probe["affinity"] == cpu_list(probe["hq_cpus"])  # still pinned
