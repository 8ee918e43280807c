"""Starting and watching node processes."""

from beampipe.manager.local import LocalLauncher, RunResult

__all__ = ["LocalLauncher", "RunResult"]
