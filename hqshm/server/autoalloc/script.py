"""The batch script and the worker command line in it, exactly as deployment.md §6.3-§6.5.

Pure text: the caller gives the paths (the absolute `hq`, the instance directory, the
allocation directory) and whether ``RUST_LOG`` is set, so tests compare whole lines.
"""

from __future__ import annotations

from pathlib import Path

from hqshm.model.allocqueue import DEFAULT_IDLE_TIMEOUT, QueueParams
from hqshm.model.durations import format_humantime


def format_walltime(seconds: float) -> str:
    """`HH:MM:SS` (hours may exceed 24), whole seconds rounded up so nothing is cut short."""
    total = int(-(-seconds // 1))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def allocation_name(queue_id: int, params: QueueParams, counter: int) -> str:
    """`hq-1-1`, `foo-1`: the queue's name (or `hq-<id>`) and the queue's allocation count."""
    return f"{params.name or f'hq-{queue_id}'}-{counter}"


def queue_dir(instance_dir: Path, queue_id: int, params: QueueParams) -> Path:
    """`<instance dir>/autoalloc/<queue id>[-<name>]`."""
    suffix = f"-{params.name}" if params.name else ""
    return instance_dir / "autoalloc" / f"{queue_id}{suffix}"


def allocation_dir(instance_dir: Path, queue_id: int, params: QueueParams, counter: int) -> Path:
    """`.../autoalloc/1-foo/001` (NNN: the queue's allocation counter, at least 3 digits)."""
    return queue_dir(instance_dir, queue_id, params) / f"{counter:03d}"


def worker_args(params: QueueParams) -> list[str]:
    """The worker options of §6.4 after `--server-dir`, each only when given, in order."""
    args: list[str] = []
    if params.cpus is not None:
        args.append(f'--cpus "{params.cpus}"')
    args += [f'--resource "{r}"' for r in params.resources]
    if params.coupling is not None:
        args.append(f'--coupling "{params.coupling}"')
    if params.group is not None:
        args.append(f"--group {params.group}")
    if params.no_hyper_threading:
        args.append("--no-hyper-threading")
    if params.detect_resources is not None:
        args.append(f"--detect-resources {params.detect_resources}")
    if params.overview_interval is not None:
        args.append(f'--overview-interval "{params.overview_interval}"')
    if params.min_utilization > 0:
        args.append(f"--min-utilization {params.min_utilization!r}")
    args.append(f'--on-server-lost "{params.on_server_lost}"')
    args.append(f'--time-limit "{format_humantime(params.worker_limit)}"')
    return args


def worker_command(params: QueueParams, hq_path: str, instance_dir: Path,
                   rust_log: str | None) -> str:
    """`[start && ][RUST_LOG=v ][wrap ]<hq> worker start ...[; stop]`."""
    idle = params.idle_timeout if params.idle_timeout is not None else DEFAULT_IDLE_TIMEOUT
    parts = [f'{hq_path} worker start --idle-timeout "{format_humantime(idle)}" '
             f'--manager "{params.manager}" --server-dir "{instance_dir}"', *worker_args(params)]
    command = " ".join(parts)
    if params.worker_wrap_cmd:
        command = f"{params.worker_wrap_cmd} {command}"
    if rust_log is not None:
        command = f"RUST_LOG={rust_log} {command}"
    if params.worker_start_cmd:
        command = f"{params.worker_start_cmd} && {command}"
    if params.worker_stop_cmd:
        command = f"{command}; {params.worker_stop_cmd}"
    return command


def pbs_script(params: QueueParams, name: str, workers: int, alloc_dir: Path, command: str,
               dry_run: bool = False) -> str:
    lines = ["#!/bin/bash", f"#PBS -l select={workers}", f"#PBS -N {name}",
             f"#PBS -o {alloc_dir}/stdout", f"#PBS -e {alloc_dir}/stderr",
             f"#PBS -l walltime={format_walltime(params.time_limit)}"]
    if params.additional_args:
        lines.append("#PBS " + " ".join(params.additional_args))
    if dry_run:
        lines.append("#PBS -h")
    body = command if workers == 1 else f"pbsdsh -- bash -l -c '{command}'"
    return "\n".join([*lines, "", body]) + "\n"


def slurm_script(params: QueueParams, name: str, workers: int, alloc_dir: Path,
                 command: str) -> str:
    lines = ["#!/bin/bash", f"#SBATCH --nodes={workers}", f"#SBATCH --job-name={name}",
             f"#SBATCH --output={alloc_dir}/stdout", f"#SBATCH --error={alloc_dir}/stderr",
             f"#SBATCH --time={format_walltime(params.time_limit)}"]
    if params.additional_args:
        lines.append("#SBATCH " + " ".join(params.additional_args))
    body = (command if workers == 1
            else f"srun --overlap --ntasks={workers} --nodes={workers} {command}")
    return "\n".join([*lines, "", body]) + "\n"


def batch_script(params: QueueParams, name: str, workers: int, alloc_dir: Path, command: str,
                 dry_run: bool = False) -> str:
    if params.manager == "pbs":
        return pbs_script(params, name, workers, alloc_dir, command, dry_run)
    return slurm_script(params, name, workers, alloc_dir, command)
