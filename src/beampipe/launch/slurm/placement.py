"""SlurmPlacement: a pipeline's node processes as job steps of one Slurm allocation."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from beampipe.config import Pipeline
from beampipe.launch.command import NodeCommand
from beampipe.launch.slurm.commands import (
    COMMAND_TIMEOUT,
    FINAL_STATES,
    REACH_TIMEOUT,
    Component,
    SlurmError,
    components,
    run_command,
    slurm_env,
    squeue_jobs,
)
from beampipe.launch.slurm.step import SlurmStep, Step
from beampipe.transport.address import advertised


class SlurmPlacement:
    """Node replicas as job steps of one Slurm allocation per pipeline.

    Args:
        partition: the partition (``--partition``) for nodes whose ``resources:`` name none;
            default the cluster's default partition.
        time: the time limit (``--time``, e.g. ``"2:00:00"``) for nodes whose ``resources:``
            give none; default the partition's.
        python: the Python interpreter that runs node processes on the compute nodes (the same
            path must exist there, with beampipe installed).
        poll_interval: seconds between ``squeue`` queries while waiting, and how long
            :meth:`where` reuses one ``squeue --steps`` answer.
        start_timeout: seconds the allocation may stay pending before :meth:`start` gives up
            (cancels the job and raises :class:`SlurmError`).
        stop_timeout: seconds :meth:`stop` waits for ``squeue`` to show the job ended.

    Nodes and the launcher talk over TCP: the control channel and every output port bind all
    interfaces; node processes reach the launcher under this host's name (or ``BEAMPIPE_HOST``,
    see :func:`beampipe.transport.address.advertised`), checked from every allocated node when
    the control endpoint is made, and each node advertises its ports under its own host name.
    Paths the pipeline reads and writes (and the run directory, where the logs go) must be on a
    file system the compute nodes share with this host.
    """

    name = "slurm"

    def __init__(
        self,
        partition: str | None = None,
        time: str | None = None,
        python: str = sys.executable,
        poll_interval: float = 1.0,
        start_timeout: float = 120.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self.partition = partition
        self.time = time
        self.python = python
        self.poll_interval = poll_interval
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.control_bind = "tcp://0.0.0.0:*"
        self.node_bind = "tcp://0.0.0.0:*"
        self.job_id: int | None = None
        """The allocation's job id (the het job's leader id), once :meth:`start` submitted it."""
        self.job_name = ""
        self.components: list[Component] = []
        self.nodes: list[str] = []
        """The allocated compute nodes of each component (Slurm node lists), once running."""
        self._group: dict[str, int] = {}
        self._component_ids: dict[int, int] = {}  # component job id -> het group index
        self._node_counts: list[int] = []
        self._steps: dict[str, Step] = {}
        self._steps_at = -float("inf")
        self._seen: dict[str, Step] = {}  # the last step seen of each replica's process

    # -- the allocation ------------------------------------------------------------------------

    def batch_script(self, pipeline: Pipeline, rundir: Path) -> str:
        """The ``sbatch`` script holding ``pipeline``'s allocation: per :class:`Component`
        ``--ntasks`` (its replicas), ``--cpus-per-task``, ``--mem-per-cpu`` (``memory`` divided
        by ``cpus``, rounded up: ``--mem`` would be per node, not per task), ``--gpus-per-task``,
        ``--partition`` and ``--time`` (the node's, else this placement's), components separated
        by ``#SBATCH hetjob``; the job is named ``beampipe-<pipeline name>`` and its output goes
        to ``rundir/slurm-<job id>.out``. The script itself only sleeps."""
        parts = components(pipeline)
        lines = [
            "#!/bin/sh",
            f"#SBATCH --job-name={shlex.quote('beampipe-' + pipeline.name)}",
            f"#SBATCH --output={shlex.quote(str(rundir.absolute() / 'slurm-%j.out'))}",
        ]
        for index, comp in enumerate(parts):
            if index:
                lines.append("#SBATCH hetjob")
            res = comp.resources
            lines.append(f"# component {index}: {', '.join(comp.nodes)}")
            lines.append(f"#SBATCH --ntasks={comp.tasks}")
            lines.append(f"#SBATCH --cpus-per-task={res.cpus}")
            if res.memory_mb is not None:
                lines.append(f"#SBATCH --mem-per-cpu={-(-res.memory_mb // res.cpus)}M")
            if res.gpus:
                lines.append(f"#SBATCH --gpus-per-task={res.gpus}")
            partition = res.partition or self.partition
            if partition:
                lines.append(f"#SBATCH --partition={shlex.quote(partition)}")
            limit = res.time or self.time
            if limit:
                lines.append(f"#SBATCH --time={shlex.quote(limit)}")
        lines += [
            "# beampipe: this job only holds the allocation; the node processes run as its job",
            "# steps (srun --jobid --het-group --overlap), started by the launcher.",
            "exec sleep infinity",
            "",
        ]
        return "\n".join(lines)

    def start(self, pipeline: Pipeline, rundir: Path) -> None:
        """Submit the allocation (:meth:`batch_script`, kept as ``rundir/allocation.sbatch``)
        and wait until every component runs.

        Raises:
            SlurmError: ``sbatch`` is missing or rejected the job, or the job did not start
                within ``start_timeout`` seconds (it is cancelled; the message gives Slurm's
                reason, e.g. ``Resources``), or it ended before it ran.
        """
        self.components = components(pipeline)
        self._group = {n: g for g, comp in enumerate(self.components) for n in comp.nodes}
        self.job_name = f"beampipe-{pipeline.name}"
        script = rundir / "allocation.sbatch"
        script.write_text(self.batch_script(pipeline, rundir))
        out = run_command(["sbatch", "--parsable", str(script)])
        self.job_id = int(out.strip().split(";")[0])
        try:
            self._wait_running(rundir)
        except BaseException:
            self._cancel()
            raise

    def _wait_running(self, rundir: Path) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            jobs = squeue_jobs(self._id)
            states = {j.get("job_state") for j in jobs}
            if len(jobs) == len(self.components) and states == {"RUNNING"}:
                jobs.sort(key=lambda j: j.get("het_job_offset") or 0)
                self._component_ids = {j["job_id"]: g for g, j in enumerate(jobs)}
                self.nodes = [j.get("nodes", "") for j in jobs]
                self._node_counts = [j.get("node_count") or 1 for j in jobs]
                return
            ended = states & FINAL_STATES
            if ended or time.monotonic() > deadline:
                why = "; ".join(
                    f"{j.get('job_id')}: {j.get('job_state')} (reason {j.get('state_reason')})"
                    for j in jobs
                )
                what = (
                    f"ended ({', '.join(sorted(ended))}) before it ran"
                    if ended
                    else f"did not start within {self.start_timeout:g} s and was cancelled"
                )
                hint = (
                    f"; its {len(self.components)} components need "
                    f"{len(self.components)} distinct nodes"
                    if len(self.components) > 1
                    else ""
                )
                out = rundir.absolute() / f"slurm-{self.job_id}.out"
                raise SlurmError(
                    f"Slurm job {self.job_id} ({self.job_name}) {what}: "
                    f"{why or 'not listed by squeue'}{hint}; see {out}"
                )
            time.sleep(self.poll_interval)

    @property
    def _id(self) -> int:
        if self.job_id is None:
            raise SlurmError("the Slurm placement has no job: start() was not called")
        return self.job_id

    def _cancel(self) -> None:
        if self.job_id is not None:
            run_command(["scancel", str(self.job_id)])

    def stop(self) -> None:
        """Cancel the allocation (``scancel``; any step still running ends with it) and wait
        until ``squeue --json`` shows every component ended (Slurm keeps listing ended jobs
        for ``MinJobAge`` seconds, in a final state).

        Raises:
            SlurmError: ``scancel`` failed, or the job still had not ended after
                ``stop_timeout`` seconds.
        """
        if self.job_id is None:
            return
        self._cancel()
        deadline = time.monotonic() + self.stop_timeout
        while True:
            live = [j for j in squeue_jobs(self.job_id) if j.get("job_state") not in FINAL_STATES]
            if not live:
                return
            if time.monotonic() > deadline:
                states = ", ".join(f"{j.get('job_id')}: {j.get('job_state')}" for j in live)
                raise SlurmError(
                    f"Slurm job {self.job_id} ({self.job_name}) still not ended "
                    f"{self.stop_timeout:g} s after scancel ({states})"
                )
            time.sleep(min(self.poll_interval, 0.2))

    def describe(self) -> dict[str, Any]:
        """``{"job_id": ..., "job_name": ..., "nodes": [node list per component]}``."""
        return {"job_id": self.job_id, "job_name": self.job_name, "nodes": list(self.nodes)}

    # -- the control channel -------------------------------------------------------------------

    def control_endpoint(self, bound: str) -> str:
        """``bound`` under this host's name (:func:`~beampipe.transport.address.advertised`),
        after checking that every allocated node can open a TCP connection to it.

        Raises:
            SlurmError: a compute node cannot resolve or reach it (set ``BEAMPIPE_HOST`` to a
                name or address of this host that the compute nodes can reach).
        """
        endpoint = advertised(bound)
        host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
        address = (host.strip("[]"), int(port))
        check = f"import socket; socket.create_connection({address!r}, {REACH_TIMEOUT}).close()"
        runs = []
        for group in range(len(self.components)):
            argv = [
                *self._srun_options(group),
                f"--nodes={self._node_counts[group]}",
                "--ntasks-per-node=1",
                "--job-name=beampipe-reach",
                self.python,
                "-c",
                check,
            ]
            runs.append(
                subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                    env=slurm_env(dict(os.environ)),
                    start_new_session=True,
                )
            )
        for group, run in enumerate(runs):
            try:
                output, _ = run.communicate(timeout=REACH_TIMEOUT + COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                run.send_signal(signal.SIGTERM)
                output, _ = run.communicate()
            if run.returncode != 0:
                lines = output.strip().splitlines()
                detail = [x for x in lines if not x.startswith((" ", "Traceback"))] or lines
                raise SlurmError(
                    f"the compute nodes {self.nodes[group]} of Slurm job {self.job_id} cannot "
                    f"reach the launcher at {endpoint} (set BEAMPIPE_HOST to a name or address of "
                    f"{socket.gethostname()} they can reach): {'; '.join(detail)}"
                )
        return endpoint

    # -- steps ---------------------------------------------------------------------------------

    def _srun_options(self, group: int) -> list[str]:
        argv = ["srun", f"--jobid={self._id}", "--overlap", "--quiet"]
        if len(self.components) > 1:
            argv.append(f"--het-group={group}")
        return argv

    def spawn(self, command: NodeCommand, log: Path) -> SlurmStep:
        """Run ``command`` as a one-task job step of the node's het job component:
        ``srun --jobid=J [--het-group=G] --overlap --ntasks=1 --cpus-per-task=C [--mem=M]
        [--gpus=N] --job-name=NODE.REPLICA --output=LOG --export=ALL ARGV`` with the command's
        environment (without ``BEAMPIPE_HOST``, so that each node advertises its own host).

        ``--overlap`` lets steps share the allocation's CPUs and memory: a scaled-up node may
        run more replicas than the allocation has tasks (they then share its CPUs). The
        launcher's Python (``sys.executable``) is replaced by ``python``.
        """
        node, replica = command.node, command.replica
        group = self._group.get(node)
        if group is None:
            raise SlurmError(f"node {node!r} is not in the pipeline the Slurm job was made for")
        res = self.components[group].resources
        if command.python == sys.executable:
            command = command.replace(python=self.python)
        srun = [
            *self._srun_options(group),
            "--ntasks=1",
            "--nodes=1",
            f"--cpus-per-task={res.cpus}",
        ]
        if res.memory_mb is not None:
            srun.append(f"--mem={res.memory_mb}M")
        if res.gpus:
            srun.append(f"--gpus={res.gpus}")
        srun += [
            f"--job-name={node}.{replica}",
            f"--output={log.absolute()}",
            "--open-mode=append",
            "--export=ALL",
            *command.argv,
        ]
        step_env = slurm_env(command.env)
        step_env.pop("BEAMPIPE_HOST", None)
        if shutil.which("srun", path=step_env.get("PATH")) is None:
            raise SlurmError("srun not found on PATH: the Slurm backend needs the Slurm client")
        with open(log, "ab") as out:  # srun's own messages; the task's output is appended too
            proc = subprocess.Popen(
                srun,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=step_env,
            )
        self._steps_at = -float("inf")  # where() lists the new step
        self._seen.pop(f"{node}.{replica}", None)
        return SlurmStep(self, node, replica, proc)

    def _list_steps(self) -> dict[str, Step]:
        """Our job's steps by name (the newest step of each name), from ``squeue --steps``
        (Slurm 22.05's ``squeue --json`` has no steps)."""
        if not self._component_ids:
            return {}
        ids = ",".join(str(i) for i in self._component_ids)
        try:
            out = run_command(
                ["squeue", "--steps", "--noheader", f"--jobs={ids}", "--format=%i|%j|%N"]
            )
        except SlurmError:
            return {}  # the job is gone: no steps
        steps: dict[str, Step] = {}
        for line in out.splitlines():
            step_id, name, nodes = line.strip().split("|", 2)
            number = step_id.partition(".")[2]
            if not number.isdigit():
                continue  # the batch script's step
            old = steps.get(name)
            if old is None or int(number) > int(old.id.partition(".")[2]):
                steps[name] = Step(step_id, name, nodes)
        return steps

    def step_of(self, node: str, replica: int, fresh: bool = False) -> Step | None:
        """The job step of ``node``'s ``replica`` as ``squeue`` lists it (None if it does not,
        e.g. not started yet or ended); the listing is reused for ``poll_interval`` seconds
        unless ``fresh``."""
        now = time.monotonic()
        if fresh or now - self._steps_at > self.poll_interval:
            self._steps = self._list_steps()
            self._steps_at = now
        return self._steps.get(f"{node}.{replica}")

    def where(self, node: str, replica: int) -> str:
        """``"job 17 step 3 on node1"`` (``job 17+1 ...`` for het job component 1): the step of
        the replica's current process, as ``squeue`` lists it or last listed it (so that it is
        still named after it ended); ``"job 17"`` if ``squeue`` never listed it."""
        if self.job_id is None:
            return ""
        name = f"{node}.{replica}"
        step = self.step_of(node, replica) or self._seen.get(name)
        if step is None:
            return f"job {self.job_id}"
        self._seen[name] = step
        job, _, number = step.id.partition(".")
        group = self._component_ids.get(int(job), 0)
        label = f"{self.job_id}+{group}" if len(self.components) > 1 else str(self.job_id)
        return f"job {label} step {number} on {step.nodes}"
