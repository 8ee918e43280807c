"""Reading the YAML of a pipeline file while keeping the line of every key and list item."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from beampipe.config.composer import BoundedComposer, LimitError
from beampipe.config.errors import PipelineError, Problems
from beampipe.config.pydantic_errors import short_repr
from beampipe.config.syntax import syntax_error

try:  # ruamel.yaml >= 0.19 stops at YAML().max_depth; older versions run out of stack
    from ruamel.yaml.composer import MaxDepthExceededError

    _TOO_DEEP: tuple[type[Exception], ...] = (MaxDepthExceededError, RecursionError)
except ImportError:  # pragma: no cover
    _TOO_DEEP = (RecursionError,)

MAX_DEPTH = 100
"""How deeply collections may nest in a pipeline file (ruamel's composer recurses, and deep
nesting also makes its scanner slow)."""


class Document:
    """A parsed pipeline file: the round-trip tree (for lines) and its plain-Python value.

    Attributes:
        file: path used in error messages.
        tree: ruamel's round-trip tree (a ``CommentedMap`` at the top).
        data: the same content as plain ``dict`` / ``list`` / scalars (JSON-able; dates become
            ISO strings).
    """

    def __init__(self, file: str, tree: CommentedMap) -> None:
        _check_items(tree, file)
        self.file = file
        self.tree = tree
        self.data: dict[Any, Any] = plain(tree)

    @classmethod
    def parse(cls, text: str, file: str = "<string>") -> Document:
        """Parse ``text``; its top level must be a mapping.

        Raises:
            PipelineError: YAML syntax error, duplicate key, empty document, a top level that is
                not a mapping, a limit of :mod:`beampipe.config.composer` exceeded (aliases,
                64-bit integers), a list or mapping as a key, or a value without a JSON form
                (binary data, a set, a scalar of a tag of its own, ``.inf`` or ``.nan``).
        """
        try:
            tree = load_yaml(text)
        except LimitError as exc:
            raise PipelineError(exc.problem, file=file, line=exc.line) from None
        except DuplicateKeyError as exc:
            raise _duplicate_key_error(exc, text, file) from None
        except _TOO_DEEP as exc:
            mark = getattr(exc, "problem_mark", None)
            raise PipelineError(
                f"YAML nested too deeply (more than {MAX_DEPTH} levels)",
                file=file,
                line=mark.line + 1 if mark is not None else None,
            ) from None
        except MarkedYAMLError as exc:
            raise syntax_error(exc, text, file) from None
        except ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            raise PipelineError(f"YAML error: {exc.reason}", file=file, line=line) from None
        except YAMLError as exc:
            raise PipelineError(f"YAML error: {exc}", file=file) from None
        if tree is None:
            raise PipelineError(
                "the file is empty: a pipeline needs 'nodes:' (and usually 'connections:')",
                file=file,
            )
        if not isinstance(tree, CommentedMap):
            line = tree.lc.line + 1 if isinstance(tree, CommentedSeq) else _first_content_line(text)
            raise PipelineError(
                "the top level should be a mapping with 'name:', 'nodes:' and 'connections:', "
                f"got {_kind(tree)}",
                file=file,
                line=line,
            )
        return cls(file, tree)

    def line(self, *path: Any) -> int:
        """1-based line of the item at ``path`` (keys and list indices from the top).

        Where the path leaves the document (a missing key), the line of the deepest item that
        exists is returned, so the answer is always somewhere sensible.
        """
        item: Any = self.tree
        line = self.tree.lc.line + 1
        for key in path:
            if isinstance(item, CommentedMap) and _has_key(item, key):
                # a key brought in by a merge (<<: *anchor) has no line of its own
                with contextlib.suppress(KeyError, TypeError):
                    line = item.lc.key(key)[0] + 1
                item = item[key]
            elif isinstance(item, CommentedSeq) and isinstance(key, int) and 0 <= key < len(item):
                line = item.lc.item(key)[0] + 1
                item = item[key]
            else:
                break
        return line


def load_yaml(text: str, typ: str = "rt", allow_duplicate_keys: bool = False) -> Any:
    """``text`` read by ruamel.yaml (``typ`` ``"rt"`` or ``"safe"``), nesting at most
    :data:`MAX_DEPTH` levels and within the limits of :class:`BoundedComposer`.

    Raises:
        LimitError: an alias or integer over a limit.
        ruamel.yaml.error.YAMLError: the text is not YAML.
        RecursionError: nested too deeply for the parser.
    """
    yaml = YAML(typ=typ, pure=True)
    yaml.Composer = BoundedComposer
    yaml.max_depth = MAX_DEPTH
    yaml.allow_duplicate_keys = allow_duplicate_keys
    return yaml.load(text)


def non_finite(value: Any) -> bool:
    """Whether plain ``value`` holds a float that is not finite (at any depth)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict | list):
            stack.extend(item.values() if isinstance(item, dict) else item)
    return False


def plain(value: Any) -> Any:
    """``value`` with ruamel's round-trip types replaced by plain Python ones."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dt.date):  # also datetime; kept as text, a typed param parses it back
        return value.isoformat()
    return value


def _has_key(mapping: CommentedMap, key: Any) -> bool:
    try:
        return key in mapping
    except TypeError:  # unhashable
        return False


_DUPLICATE = re.compile(r'found duplicate key "(.*?)" with value')


def _duplicate_key_error(exc: DuplicateKeyError, text: str, file: str) -> PipelineError:
    """Name the duplicated key and where it was first given; say when it is a node name."""
    line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
    match = _DUPLICATE.search(exc.problem or "")
    key = match.group(1) if match else "?"
    mapping, node = _mapping_at(text, exc.context_mark)
    first = ""
    if mapping is not None:
        try:
            first = f" (first on line {mapping.lc.key(key)[0] + 1})"
        except (KeyError, TypeError):
            first = ""
    if node == "":  # the duplicate is a node name
        return PipelineError(f"duplicate node name {key!r}{first}", file=file, line=line, node=key)
    return PipelineError(f"duplicate key {key!r}{first}", file=file, line=line, node=node)


def _mapping_at(text: str, mark: Any) -> tuple[CommentedMap | None, str | None]:
    """The mapping starting at ``mark`` and whose it is: ``""`` for ``nodes:`` itself, a node's
    name for a node's entry, ``None`` for anything else."""
    if mark is None:
        return None, None
    try:
        tree = load_yaml(text, allow_duplicate_keys=True)
    except (YAMLError, LimitError, *_TOO_DEEP):
        return None, None

    def at_mark(item: Any) -> bool:
        return (
            isinstance(item, CommentedMap)
            and item.lc.line == mark.line
            and item.lc.col == mark.column
        )

    nodes = tree.get("nodes") if isinstance(tree, CommentedMap) else None
    if at_mark(nodes):
        return nodes, ""
    if isinstance(nodes, CommentedMap):
        for name, entry in nodes.items():
            if at_mark(entry):
                return entry, str(name)
    found = _find_mapping(tree, at_mark)
    return found, None


def _find_mapping(tree: Any, test: Any) -> CommentedMap | None:
    """The first collection in ``tree`` (depth first, each shared one once) that passes
    ``test``."""
    seen: set[int] = set()
    stack = [tree]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if test(item):
            return item  # type: ignore[no-any-return]
        if isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return None


def _check_items(tree: CommentedMap, file: str) -> None:
    """Every key in ``tree`` is a scalar, and every value a plain YAML one: a list or mapping as
    a key (``? [a, b]``), a set (``!!set``), binary data (``!!binary``), a scalar of an unknown
    tag (``!foo 5``) or a float that is not finite (``.inf``, ``.nan``) has no plain JSON form,
    which a pipeline is sent to its nodes in.

    Raises:
        PipelineError: each such item, at its line.
    """
    problems = Problems(file)
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(tree, 1)]  # with the line of the item, or of its parent
    while stack:
        item, at = stack.pop()
        if id(item) in seen or not isinstance(item, dict | list | tuple):
            continue
        seen.add(id(item))
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, value in pairs:
            line = _line(item, key) or at
            problem = _key_problem(key)
            if problem is not None:
                problems.add(problem, _key_line(item, key))
            problem = _value_problem(value)
            if problem is not None:
                problems.add(problem, line)
            stack.append((value, line))
    problems.raise_if_any()


_PLAIN = (str, int, float, dt.date, type(None), dict, list, tuple)
"""Types of the values a pipeline file may hold (ruamel's round-trip types derive from them)."""


def _key_problem(key: Any) -> str | None:
    if isinstance(key, tuple | list | set | Mapping):
        kind = "a mapping" if isinstance(key, Mapping) else "a list"
        return f"a key should be a name or number, not {kind} ({short_repr(key)})"
    return None


NOT_FINITE = (
    "not a finite number: .inf and .nan cannot be used in a pipeline file (the node processes "
    "would get null)"
)


def _value_problem(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return NOT_FINITE
    if isinstance(value, _PLAIN):
        return None
    if isinstance(value, bytes):
        what = "binary data (!!binary)"
    elif isinstance(value, AbstractSet):
        what = "a set (!!set)"
    else:  # a TaggedScalar
        what = f"a value tagged {getattr(getattr(value, 'tag', None), 'value', '?')}"
        value = getattr(value, "value", value)
    return f"{what} cannot be used in a pipeline file: {short_repr(value)}"


def _key_line(mapping: CommentedMap, key: Any) -> int:
    try:
        return int(mapping.lc.key(key)[0]) + 1
    except (KeyError, TypeError, AttributeError):  # a key brought in by a merge
        return int(mapping.lc.line) + 1


def _line(collection: Any, key: Any) -> int | None:
    """Line of the item ``key`` of ``collection``, else of the collection (a merged key); None
    in a collection without lines (the pairs of ``!!pairs``)."""
    lc = getattr(collection, "lc", None)
    if lc is None:
        return None
    try:
        if isinstance(collection, CommentedSeq):
            return int(lc.item(key)[0]) + 1
        return int(lc.value(key)[0]) + 1
    except (KeyError, TypeError, AttributeError, IndexError):
        return int(lc.line) + 1


def _first_content_line(text: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "---", "%")):
            return number
    return 1


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {str(value)[:60]!r}"
