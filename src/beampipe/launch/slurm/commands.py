"""The Slurm client commands the backend runs (``sbatch``, ``squeue``, ``scancel``), what it
reads back from them, and the het job components of a pipeline."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from beampipe.config import Pipeline
from beampipe.config.schema import Resources

FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)
"""``job_state`` values of a job that has ended (``squeue --json`` still lists such jobs for the
cluster's ``MinJobAge`` seconds)."""


COMMAND_TIMEOUT = 60.0
"""Seconds a Slurm command (``sbatch``, ``squeue``, ``scancel``) may take before it counts as
failed."""


REACH_TIMEOUT = 10.0
"""Seconds a compute node gets to open a TCP connection to the launcher's control endpoint."""


_JOB_ENV = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")
"""Prefixes of the variables Slurm sets inside a job and reads as options: removed from the
environment of ``sbatch``/``srun`` so that a launcher running inside a Slurm job does not pass
its own job's settings on (``SLURM_CONF`` is kept)."""


class SlurmError(RuntimeError):
    """A Slurm command failed or a job did not get where it should (the message names the
    command or job and Slurm's own explanation)."""


@dataclass(frozen=True)
class Component:
    """One group of a pipeline's nodes with equal :class:`~beampipe.config.schema.Resources`:
    one component of the heterogeneous job (``--het-group`` index = position in
    :func:`components`).

    Attributes:
        resources: what each of the group's replicas needs.
        nodes: the pipeline nodes of the group, in file order.
        tasks: replicas of those nodes together (``--ntasks``).
    """

    resources: Resources
    nodes: tuple[str, ...]
    tasks: int


def components(pipeline: Pipeline) -> list[Component]:
    """``pipeline``'s nodes grouped by equal ``resources:``, groups in the file order of their
    first node."""
    groups: dict[Resources, list[str]] = {}
    for name, spec in pipeline.nodes.items():
        groups.setdefault(spec.resources, []).append(name)
    return [
        Component(res, tuple(names), sum(pipeline.nodes[n].replicas for n in names))
        for res, names in groups.items()
    ]


def slurm_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the variables of an enclosing Slurm job (see ``_JOB_ENV``)."""
    return {k: v for k, v in env.items() if k == "SLURM_CONF" or not k.startswith(_JOB_ENV)}


def run_command(argv: list[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a Slurm command; its standard output.

    Raises:
        SlurmError: the command is not on ``PATH``, fails (the message holds its standard
            error) or takes longer than ``timeout`` seconds.
    """
    if shutil.which(argv[0]) is None:
        raise SlurmError(
            f"{argv[0]} not found on PATH: the Slurm backend needs the Slurm client commands "
            "(sbatch, srun, squeue, scancel) on the host that runs the pipeline"
        )
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=slurm_env(dict(os.environ)),
        )
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{shlex.join(argv)} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        raise SlurmError(
            f"{shlex.join(argv)} failed (exit status {done.returncode}): "
            f"{done.stderr.strip() or done.stdout.strip() or '(no output)'}"
        )
    return done.stdout


def squeue_jobs(job_id: int) -> list[dict[str, Any]]:
    """The ``squeue --json`` records of job ``job_id``: one per component of a heterogeneous
    job (their ``het_job_offset`` is the component's index), none once Slurm forgot the job.

    ``squeue --json`` lists every job of the cluster (Slurm 22.05 ignores its filter options
    with ``--json``), finished ones for the cluster's ``MinJobAge``.

    Raises:
        SlurmError: ``squeue`` failed.
    """
    data = json.loads(run_command(["squeue", "--json"]))
    return [
        job
        for job in data.get("jobs", [])
        if job.get("job_id") == job_id or (job.get("het_job_id") or None) == job_id
    ]
