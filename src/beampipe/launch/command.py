"""How a node replica's process is started, as one value: every backend runs exactly this.

``PYTHON -m beampipe.runtime --control EP --node NODE --replica R --incarnation I`` with the
environment ``env`` (what :mod:`beampipe.runtime.__main__` parses). The launcher makes one per
process; a placement runs it as an OS process, a Slurm job step (with the cluster's Python) or
a Nomad task (whose job renders :meth:`NodeCommand.args` with ``${NOMAD_ALLOC_INDEX}`` as the
replica). Nothing parses a command line back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeCommand:
    """One node process's command.

    Attributes:
        python: the interpreter (the launcher's own, ``sys.executable``, unless a backend runs
            another on its hosts).
        control: the launcher's control endpoint the process connects to.
        node, replica: which node replica it runs; ``replica`` may be a placeholder that the
            backend fills in (Nomad's ``${NOMAD_ALLOC_INDEX}``).
        incarnation: how often this replica was restarted before (0 at the first start).
        env: its environment.
    """

    python: str
    control: str
    node: str
    replica: int | str
    incarnation: int = 0
    env: dict[str, str] = field(default_factory=dict, compare=False)

    def args(self) -> list[str]:
        """The arguments after the interpreter."""
        return [
            "-m",
            "beampipe.runtime",
            "--control",
            self.control,
            "--node",
            self.node,
            "--replica",
            str(self.replica),
            "--incarnation",
            str(self.incarnation),
        ]

    @property
    def argv(self) -> list[str]:
        """The whole command line: the interpreter, then :meth:`args`."""
        return [self.python, *self.args()]

    def replace(self, **changes: object) -> NodeCommand:
        """A copy with the given fields changed (e.g. another ``python``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
