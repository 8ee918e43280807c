"""What the image reducers ``sum``, ``mean`` and ``max`` share: per stream, one accumulator per
data name, into which each message's array is folded in place (:class:`Fold`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

import beampipe
from beampipe.nodes.columns import numeric

__all__ = ["Fold", "FoldParams"]


class FoldParams(beampipe.ReducerParams):
    """``fields``: the data names to fold (null: every numeric array of the first message)."""

    fields: list[str] | None = None


@dataclass
class _Folded:
    """The accumulators of one stream: ``{data name: accumulator}`` and the messages folded."""

    accumulators: dict[str, np.ndarray] = field(default_factory=dict)
    count: int = 0
    max_id: int = 0


class Fold(beampipe.Reducer):
    """Base of the reducers that fold the numeric arrays of every message of a stream into one
    array per name, in float64 (complex128 for complex input where :attr:`kinds` allows it).

    A subclass sets :attr:`kinds` and :attr:`what` and implements :meth:`fold` (``acc`` op=
    ``value``, in place) and, if the emitted array is not the accumulator, :meth:`image`. The
    output, errors and emission rules are those documented for ``sum`` (docs/nodes.md).
    """

    Params: ClassVar[type[beampipe.Params]] = FoldParams
    params: FoldParams
    kinds: ClassVar[str] = "biufc"
    """The numpy dtype kinds accepted."""
    what: ClassVar[str] = "fold"
    """What the accumulator is, for the errors ("sum")."""

    def fold(self, acc: np.ndarray, value: np.ndarray) -> None:
        """Fold ``value`` into ``acc`` in place."""
        raise NotImplementedError(f"{type(self).__name__}.fold")

    def image(self, acc: np.ndarray, count: int, final: bool) -> np.ndarray:
        """What is emitted for ``acc`` after ``count`` messages: by default the accumulator (a
        copy unless ``final``: it keeps changing while the message may wait in a send buffer)."""
        return acc if final else acc.copy()

    def start(self, group: str, metadata: dict[str, Any]) -> _Folded:
        return _Folded()

    def reduce(self, state: _Folded, msg: beampipe.Message) -> _Folded:
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        if state.count == 0:
            state.accumulators = self._first(msg, where)
        else:
            for name, acc in state.accumulators.items():
                value = numeric(msg, name, where, kinds=self.kinds)
                if value.shape != acc.shape:
                    raise ValueError(
                        f"{where}: field {name!r} has shape {value.shape}, "
                        f"the stream's {self.what} {acc.shape}"
                    )
                if value.dtype.kind == "c" and acc.dtype.kind != "c":
                    raise TypeError(
                        f"{where}: field {name!r} is complex, the stream's first message was real"
                    )
                self.fold(acc, value)
        state.count += 1
        state.max_id = max(state.max_id, msg.id)
        return state

    def result(self, group: str, state: _Folded, final: bool) -> beampipe.Message:
        data: dict[str, Any] = {
            k: self.image(a, state.count, final) for k, a in state.accumulators.items()
        }
        data["count"] = np.array(state.count, dtype=np.int64)
        metadata: dict[str, Any] = {"count": state.count, "final": final}
        if len(state.accumulators) == 1:
            metadata["signal"] = next(iter(state.accumulators))
        return beampipe.Message(data=data, metadata=metadata, id=state.max_id)

    def _first(self, msg: beampipe.Message, where: str) -> dict[str, np.ndarray]:
        if self.params.fields is not None:
            names = list(dict.fromkeys(self.params.fields))
        else:
            names = [
                k
                for k, v in msg.data.items()
                if isinstance(v, np.ndarray) and v.dtype.kind in self.kinds
            ]
            if not names:
                raise ValueError(
                    f"{where}: no numeric array for the {self.what}; data: "
                    f"{', '.join(msg.data) or '(none)'}"
                )
        if "count" in names:
            raise ValueError(
                f"{where}: a field named 'count' clashes with the message count in the output; "
                "set the node's params.fields to the names to use"
            )
        accumulators = {}
        for name in names:
            value = numeric(msg, name, where, kinds=self.kinds)
            dtype = np.complex128 if value.dtype.kind == "c" else np.float64
            accumulators[name] = value.astype(dtype)  # a new, writable array
        return accumulators
