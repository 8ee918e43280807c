"""The loop inside one node process."""

from beampipe.runtime.node import NodeRuntime

__all__ = ["NodeRuntime"]
