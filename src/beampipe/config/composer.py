"""Composing a pipeline file's YAML within bounds: a number of values that reads in about a
second, aliases that cannot blow up, integers that fit in 64 bits.

An alias (``*name``) repeats the collection of its anchor (``&name``). ruamel.yaml shares the
repeated collection, but the checks read the file as plain values, where every repetition is a
copy: ten nested levels of nine aliases each (a "billion laughs" file of 700 bytes) are 9**10
values. :class:`BoundedComposer` measures what each alias brings in as the file is composed,
before anything is copied, and stops at the alias that goes too far. Integers travel to the node
processes in msgpack, which takes 64 bits; a longer one is refused where it is written.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml.composer import Composer
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_VALUES = 20_000
"""How many values (scalars, lists and mappings) a file may hold as written: a 1,200-node
pipeline has 6,000; reading 20,000 takes about a second."""

MAX_ALIAS_VALUES = 100_000
"""How many values (scalars, lists and mappings, counted after expansion) the aliases of one
file may repeat, in all."""

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""The integers a pipeline file may hold: signed 64 bits."""

_INT_TAG = "tag:yaml.org,2002:int"
_INT_TEXT = 100
"""Characters beyond which an integer's text is not even converted (Python refuses 4300 digits)."""


class LimitError(Exception):
    """A value of the file beyond a limit: more than :data:`MAX_VALUES` values; an alias that
    loops back into the collection it is in, brings in more than :data:`MAX_ALIAS_VALUES` values
    or nests deeper than the loader's ``max_depth``; an integer outside :data:`INT_MIN` ..
    :data:`INT_MAX`.

    Attributes:
        problem: what is wrong, naming the alias or the integer.
        line: 1-based line of the alias or integer.
    """

    def __init__(self, problem: str, line: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


class BoundedComposer(Composer):  # type: ignore[misc]
    """ruamel.yaml's composer, measuring each node it composes (values after expansion, and
    levels), checking each alias against the limits and each integer against 64 bits. Use it as
    ``YAML(pure=True).Composer = BoundedComposer`` (the C loader has a composer of its own).

    Raises (from ``YAML().load``):
        LimitError: an alias or an integer over a limit.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader=loader)
        self._measured: dict[int, tuple[int, int]] = {}
        """``{id(node): (values, levels)}`` of every node composed so far."""
        self._repeated = 0
        self._composed = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """The next node; an alias is checked before it is taken."""
        if self.parser.check_event(AliasEvent):
            event = self.parser.peek_event()
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:  # else ruamel reports the undefined alias
                self._check_alias(event.anchor, anchored, event.start_mark.line + 1)
            return super().compose_node(parent, index)
        node = super().compose_node(parent, index)
        self._measured[id(node)] = self._measure(node)
        self._composed += 1
        if self._composed > MAX_VALUES:
            raise LimitError(
                f"more than {MAX_VALUES:,} values: too many for a pipeline file (large data "
                "belongs in a file that a node reads)",
                node.start_mark.line + 1,
            )
        return node

    def _measure(self, node: Node) -> tuple[int, int]:
        """``(values, levels)`` of ``node`` with its aliases expanded, from its children's."""
        if isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, SequenceNode):
            children = node.value
        else:
            if isinstance(node, ScalarNode) and str(node.tag) == _INT_TAG:
                self._check_int(node)
            return 1, 0
        sizes = [self._measured[id(child)] for child in children]
        return 1 + sum(s[0] for s in sizes), 1 + max((s[1] for s in sizes), default=0)

    def _check_alias(self, anchor: str, anchored: Node, line: int) -> None:
        measured = self._measured.get(id(anchored))
        if measured is None:  # its anchor's collection is still being composed
            raise LimitError(
                f"alias *{anchor} is inside the collection &{anchor} it repeats: it would "
                "contain itself",
                line,
            )
        values, levels = measured
        self._repeated += values
        if self._repeated > MAX_ALIAS_VALUES:
            raise LimitError(
                f"alias *{anchor} repeats {values:,} values, the aliases so far "
                f"{self._repeated:,}: aliases may repeat at most {MAX_ALIAS_VALUES:,} values in "
                "all (aliases inside repeated collections multiply)",
                line,
            )
        limit = self.loader.max_depth
        if limit and self.depth + levels > limit:
            raise LimitError(
                f"alias *{anchor} nests {self.depth + levels} levels deep here (more than {limit})",
                line,
            )

    def _check_int(self, node: ScalarNode) -> None:
        text = str(node.value)
        fits = False
        if len(text) <= _INT_TEXT:
            try:
                fits = INT_MIN <= self.loader.constructor.construct_yaml_int(node) <= INT_MAX
            except ValueError:  # not an integer after all: the constructor will say so
                fits = True
        if not fits:
            shown = text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"
            raise LimitError(
                f"integer {shown} does not fit in 64 bits (-2**63 to 2**63-1); write a number "
                "that large as a float (1e20)",
                node.start_mark.line + 1,
            )
