"""A node process placed as a Slurm job step, as the launcher sees it (poll, wait, kill)."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from beampipe.launch.slurm.commands import SlurmError, run_command

if TYPE_CHECKING:
    from beampipe.launch.slurm.placement import SlurmPlacement


class SlurmStep:
    """One node replica's job step, as the launcher sees it (a
    :class:`~beampipe.launch.placement.NodeProcess`): the ``srun`` process on this host that
    started the step and reports its end.

    ``srun`` exits with the task's exit status, or 128 + N if the task was killed by signal N;
    :meth:`poll` and :meth:`wait` give the latter as -N, as ``subprocess.Popen`` does.
    """

    def __init__(self, placement: SlurmPlacement, node: str, replica: int, srun: subprocess.Popen):
        self.placement = placement
        self.node = node
        self.replica = replica
        self.srun = srun
        self.pid: int | None = srun.pid

    @staticmethod
    def _status(code: int | None) -> int | None:
        if code is not None and 128 < code < 128 + signal.NSIG:
            return 128 - code
        return code

    def poll(self) -> int | None:
        return self._status(self.srun.poll())

    def wait(self, timeout: float | None = None) -> int:
        status = self._status(self.srun.wait(timeout))
        assert status is not None
        return status

    def kill(self) -> None:
        """SIGKILL the step's task (``scancel --signal=KILL JOB.STEP``); ``srun`` then exits.

        Killing ``srun`` itself would leave the step running, so ``srun`` is only interrupted
        (which makes it cancel its step) when the step is not known to ``squeue`` (yet).
        """
        if self.srun.poll() is not None:
            return
        step = self.placement.step_of(self.node, self.replica, fresh=True)
        if step is not None:
            try:
                run_command(["scancel", "--signal=KILL", step.id])
                return
            except SlurmError:
                pass  # the step ended meanwhile, or the controller is gone: stop srun instead
        self.srun.send_signal(signal.SIGTERM)


@dataclass(frozen=True)
class Step:
    """A job step as ``squeue --steps`` lists it: ``id`` is ``JOB.STEP`` (JOB of the het job
    component), ``nodes`` its node list."""

    id: str
    name: str
    nodes: str
