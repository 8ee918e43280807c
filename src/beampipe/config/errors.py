"""The one exception of the config layer, and a collector for reporting several problems at once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class PipelineError(ValueError):
    """A problem in a pipeline file, located as precisely as known.

    ``str(err)`` reads ``file:line: node 'x': problem`` (line and node only when known). When
    several problems were found together, :attr:`errors` holds all of them (each a single-problem
    :class:`PipelineError`), ``str(err)`` lists one per line and :attr:`file`, :attr:`line`,
    :attr:`node` and :attr:`problem` are those of the first.

    Attributes:
        file: the pipeline file's path as given, or ``"<string>"``.
        line: 1-based line in the file, or ``None`` when the problem has no line.
        node: the node at fault, or ``None``.
        problem: what is wrong, without the location.
        errors: every problem reported; ``[self]`` for a single one.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str = "<string>",
        line: int | None = None,
        node: str | None = None,
        errors: Iterable[PipelineError] | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.line = line
        self.node = node
        self.errors: list[PipelineError] = list(errors) if errors else [self]
        super().__init__(str(self))

    @property
    def location(self) -> str:
        """``file:line: node 'x': `` — the prefix of this problem's message."""
        where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        return where + (f"node {self.node!r}: " if self.node is not None else "")

    def __str__(self) -> str:
        return "\n".join(e.location + e.problem for e in self.errors)

    def __reduce__(self) -> tuple[Any, ...]:
        others = None if self.errors == [self] else self.errors
        return (_rebuild, (self.problem, self.file, self.line, self.node, others))

    @classmethod
    def combine(cls, errors: Iterable[PipelineError]) -> PipelineError:
        """One error reporting all of ``errors`` (flattened), ordered by line."""
        flat = [single for err in errors for single in err.errors]
        if not flat:
            raise ValueError("no errors to combine")
        flat.sort(key=lambda e: (e.line is None, e.line or 0))
        if len(flat) == 1:
            return flat[0]
        first = flat[0]
        return cls(first.problem, file=first.file, line=first.line, node=first.node, errors=flat)


def _rebuild(
    problem: str,
    file: str,
    line: int | None,
    node: str | None,
    errors: list[PipelineError] | None,
) -> PipelineError:
    return PipelineError(problem, file=file, line=line, node=node, errors=errors)


class Problems:
    """Collects the problems of one file so that they are reported together."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[PipelineError] = []

    def add(self, problem: str, line: int | None = None, node: str | None = None) -> None:
        """Record one problem."""
        self.errors.append(PipelineError(problem, file=self.file, line=line, node=node))

    def extend(self, error: PipelineError) -> None:
        """Record every problem of ``error``."""
        self.errors.extend(error.errors)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        """Raise all recorded problems as one :class:`PipelineError`, if there are any."""
        if self.errors:
            raise PipelineError.combine(self.errors)
