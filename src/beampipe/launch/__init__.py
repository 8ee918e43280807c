"""Starting and watching a pipeline's node processes: the launcher and the backends that place
them (this machine, Slurm, Nomad)."""

from beampipe.launch.launcher import Launcher, RunResult

__all__ = ["Launcher", "RunResult"]
