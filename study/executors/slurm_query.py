"""Asking Slurm about jobs: squeue (the controller's live view), sacct (accounting, where terminal states
live), sinfo (a partition's GPUs). Every failure is a one-line ``UserError`` naming the tool and the usual cause.

sacct's output is parsed by submitit's own ``SlurmInfoWatcher.read_info``, which also expands the folded ids of
array tasks that never started (``12_[0-2,5%4]``). squeue is asked directly: submitit's watcher knows only
sacct, which lags the controller by seconds and is missing where accounting is disabled.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess

from study.errors import UserError

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
          "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}


def slurm(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise UserError(f"executor slurm: `{cmd[0]}` is not on PATH: run on a Slurm login node, or start the "
                        f"local test cluster (bash scripts/local_slurm.sh start; source $SLURM_BASE/env.sh)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise UserError(_slurm_error(cmd[0], proc))
    return proc


def _slurm_error(tool: str, proc: subprocess.CompletedProcess) -> str:
    """One line: the tool's last message, plus the usual cause when Slurm cannot be reached at all."""
    lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()
    msg = f"{tool} failed: {lines[-1].strip()}"
    if any(x in proc.stderr for x in ("configuration source", "Unable to contact", "Connection refused")):
        msg += " (no Slurm controller reachable: is SLURM_CONF set, e.g. `source $SLURM_BASE/env.sh`?)"
    return msg


def queue_states(job_ids: list[str]) -> dict[str, str]:
    """Array task id (``12_3``) -> state, for tasks the controller still lists (pending, running, ...).

    ``-r`` lists each pending array task on its own line. A job id the controller has forgotten makes squeue
    fail for the whole list, so ask job by job in that case.
    """
    if not job_ids:
        return {}
    proc = slurm("squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T", check=False)
    if proc.returncode != 0:
        if len(job_ids) == 1:
            if "Invalid job id" in proc.stderr:
                return {}
            raise UserError(_slurm_error("squeue", proc))
        out: dict[str, str] = {}
        for jid in job_ids:
            out.update(queue_states([jid]))
        return out
    return dict(line.split("|", 1) for line in proc.stdout.splitlines() if "|" in line)


def parse_accounting(sacct_output: str) -> dict[str, str]:
    """``sacct -P -o JobID,State`` output (with its header line) -> array task id -> state (``CANCELLED by 7``
    becomes ``CANCELLED``); folded pending ranges are expanded, job steps skipped."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    info = SlurmInfoWatcher().read_info(sacct_output)
    return {tid: (stats.get("State") or "UNKNOWN").split()[0] for tid, stats in info.items()}


def accounting_states(job_ids: list[str]) -> dict[str, str]:
    """Array task id -> state as accounting records it (terminal states live only here); {} without sacct."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    proc = slurm("sacct", "-X", "-P", "-j", ",".join(job_ids), "-o", "JobID,State", check=False)
    if proc.returncode != 0:  # e.g. "Slurm accounting storage is disabled"
        return {}
    return parse_accounting(proc.stdout)


def task_states(job_ids: list[str]) -> dict[str, str]:
    """Accounting's view, overridden by the controller's fresher one for tasks it still lists."""
    return {**accounting_states(job_ids), **queue_states(job_ids)}


def partition_gpus(partition: str | None) -> int:
    """GPUs per node of a partition (the default one if None), from sinfo's gres column; 0 when none."""
    args = ["sinfo", "-h", "-o", "%G"] + (["-p", partition] if partition else [])
    best = 0
    for gres in slurm(*args).stdout.split():
        for item in gres.split(","):
            parts = item.split("(")[0].split(":")
            if parts[0] == "gpu" and parts[-1].isdigit():
                best = max(best, int(parts[-1]))
    return best


def live_job_ids() -> set[str]:
    """Ids of this user's jobs the controller still lists: each array task's own id (``%A``, what
    ``SLURM_JOB_ID`` says inside it) and its array's id (``%F``, what ``SLURM_ARRAY_JOB_ID`` says)."""
    return set(slurm("squeue", "-h", "-u", getpass.getuser(), "-o", "%A %F").stdout.split())
