"""Reading a pipeline file into a validated :class:`~beampipe.config.Pipeline`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from beampipe.config.checks import ConnectionItem, check
from beampipe.config.connections import parse_connection
from beampipe.config.document import Document
from beampipe.config.errors import PipelineError, Problems
from beampipe.config.model import NodeSpec, Pipeline
from beampipe.config.names import node_name_problem, pipeline_name_problem
from beampipe.config.overrides import apply_overrides
from beampipe.config.params import param_names
from beampipe.config.schema import (
    CONNECTION_HINT,
    ConnectionModel,
    FileModel,
    NodeModel,
    connection_problems,
    file_problems,
    node_problems,
)

MAX_FILE_BYTES = 250_000
"""Bytes of a pipeline file (a 1,200-node pipeline has 50,000; reading 250,000 bytes of small
values takes about 2 s); no more are read of anything larger (``/dev/zero``)."""


def load_pipeline(path: str | Path, overrides: dict[str, Any] | None = None) -> Pipeline:
    """Read and validate the pipeline file at ``path``.

    Args:
        path: the YAML pipeline file; error messages name it as given.
        overrides: ``{"node.param": value}`` set before validation (``beampipe run --set``).

    Raises:
        PipelineError: the file cannot be read (:func:`read_pipeline_file`) or is not a valid
            pipeline.
    """
    text = read_pipeline_file(path)
    return parse_pipeline(text, str(path), overrides, Path(path).resolve().parent)


def read_pipeline_file(path: str | Path) -> str:
    """The text of the pipeline file at ``path``, newlines as ``Path.read_text`` gives them;
    at most :data:`MAX_FILE_BYTES` are read.

    Raises:
        PipelineError: no such file, not UTF-8, larger than :data:`MAX_FILE_BYTES`, or cannot
            be read.
    """
    file = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise _too_large(file)
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise PipelineError("no such file", file=file) from None
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc, file) from None
    except OSError as exc:
        raise PipelineError(f"cannot read: {exc.strerror or exc}", file=file) from None


def _too_large(file: str) -> PipelineError:
    return PipelineError(
        f"more than {MAX_FILE_BYTES:,} bytes: too large for a pipeline file", file=file
    )


def _not_utf8(exc: UnicodeDecodeError, file: str) -> PipelineError:
    """Name the bad byte and its line; no line for a binary (or UTF-16) file, which has NULs."""
    data, bad = exc.object, exc.object[exc.start : exc.end]
    what = " ".join(f"0x{b:02x}" for b in bad)
    what = f"byte {what}" if len(bad) == 1 else f"bytes {what}"
    if b"\0" in data:
        problem = f"not UTF-8 text ({exc.reason}: {what} at offset {exc.start})"
        return PipelineError(problem, file=file)
    line = data.count(b"\n", 0, exc.start) + 1
    column = len(data[data.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode()) + 1
    latin1 = f", {bad.decode('latin-1')!r} in Latin-1" if len(bad) == 1 and bad[0] >= 0xA0 else ""
    return PipelineError(
        f"not UTF-8 text ({exc.reason}: {what} in column {column}{latin1}); save it as UTF-8",
        file=file,
        line=line,
    )


def parse_pipeline(
    text: str,
    path: str = "<string>",
    overrides: dict[str, Any] | None = None,
    base_dir: str | Path | None = None,
) -> Pipeline:
    """Validate the pipeline file content ``text``.

    Every node class is imported and every node's params are validated with its own model.

    Args:
        text: YAML content of a pipeline file.
        path: name for error messages and :attr:`Pipeline.path`.
        overrides: ``{"node.param": value}`` (nested: ``"node.a.b"``) set before validation.
        base_dir: directory relative params refer to; default: ``path``'s directory, or the
            current directory for ``"<string>"``.

    Raises:
        PipelineError: every problem found, each with file, line and node where known; a text
            of more than :data:`MAX_FILE_BYTES` bytes.
    """
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise _too_large(path)
    doc = Document.parse(text, path)
    problems = Problems(path)
    data = doc.data
    all_connections = True

    try:
        FileModel.model_validate(data)
    except ValidationError as exc:
        if any(len(e["loc"]) < 2 or e["loc"][0] != "nodes" for e in exc.errors()):
            all_connections = False  # an unknown top-level key may be misspelt 'connections'
        for loc, problem in file_problems(exc):
            node = loc[1] if len(loc) > 1 and loc[0] == "nodes" else None
            problems.add(problem, doc.line(*loc), node if isinstance(node, str) else None)
    nodes = data.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        if isinstance(nodes, dict):
            problems.add("'nodes' is empty: a pipeline needs at least one node", doc.line("nodes"))
        problems.raise_if_any()

    specs = _node_specs(doc, nodes, problems)
    refs = _connection_refs(doc, problems)
    all_connections = all_connections and len(refs) == len(data.get("connections") or [])

    params = {name: dict(spec.params) if spec else {} for name, spec in specs.items()}
    overridden, override_problems = apply_overrides(params, copy.deepcopy(overrides or {}))
    for problem in override_problems:
        problems.add(problem)
    specs = {
        name: spec.model_copy(update={"params": params[name]}) if spec else None
        for name, spec in specs.items()
    }

    def locate(*path: Any) -> int:
        return doc.line("nodes", *path)

    if base_dir is None:
        base_dir = Path.cwd() if path == "<string>" else Path(path).parent
    base_dir = Path(base_dir).resolve()
    checked = check(problems, specs, refs, locate, overridden, base_dir, all_connections)
    name = _pipeline_name(doc, path, problems)
    problems.raise_if_any()

    pipeline = Pipeline(
        name=name,
        dead_letter=data.get("dead_letter") or f"{name}.dead-letters.jsonl",
        path=path,
        base_dir=base_dir,
        nodes={node: spec for node, spec in specs.items() if spec is not None},
        connections=checked.connections,
        backend=data.get("backend") or "local",
        encrypt=bool(data.get("encrypt")),
    )
    for node, cls in checked.classes.items():
        pipeline._classes[node] = (pipeline.nodes[node].use, cls)
    for node, node_params in checked.params.items():
        pipeline._params[node] = (pipeline.nodes[node], node_params)
    return pipeline


def _pipeline_name(doc: Document, path: str, problems: Problems) -> str:
    """``name:``, or the file's stem; a name that is not a safe file name is reported."""
    name = doc.data.get("name")
    if name is not None and not isinstance(name, str):
        return "pipeline"  # reported by the file schema
    given = bool(name)
    name = name or (Path(path).stem if path != "<string>" else "pipeline")
    problem = pipeline_name_problem(name)
    if problem is not None and not given:
        problem += " (it is the file's name: give the pipeline a 'name:')"
    if problem is not None:
        problems.add(problem, doc.line("name") if given else None)
    return name


def _node_specs(
    doc: Document, nodes: dict[Any, Any], problems: Problems
) -> dict[str, NodeSpec | None]:
    """A NodeSpec per well-formed entry; ``None`` for malformed ones (reported)."""
    specs: dict[str, NodeSpec | None] = {}
    for name, entry in nodes.items():
        if not isinstance(name, str):
            continue  # reported by the file schema
        line = doc.line("nodes", name)
        problem = node_name_problem(name)
        if problem is not None:
            problems.add(problem, line, name)
            specs[name] = None
            continue
        try:
            model = NodeModel.model_validate(entry)
        except ValidationError as exc:
            misplaced = any(e["type"] == "extra_forbidden" for e in exc.errors())
            params = param_names(entry.get("use")) if misplaced else []
            for loc, problem in node_problems(exc, entry, params):
                problems.add(problem, doc.line("nodes", name, *loc), name)
            specs[name] = None
            continue
        specs[name] = NodeSpec(
            name=name,
            use=model.use,
            params=model.params,
            replicas=model.replicas,
            ordered=model.ordered,
            reorder_buffer=model.reorder_buffer,
            events=model.events.model_dump() if model.events else None,
            on_error=model.on_error,
            retries=model.retries,
            retry_delay=model.retry_delay,
            restart=model.restart,
            max_restarts=model.max_restarts,
            restart_delay=model.restart_delay,
            gap_timeout=model.gap_timeout,
            hang_timeout=model.hang_timeout or 0.0,
            reorder_timeout=model.reorder_timeout or 0.0,
            check_finite=model.check_finite,
            resources=model.resources,
            line=line,
        )
    return specs


def _connection_refs(doc: Document, problems: Problems) -> list[ConnectionItem]:
    """The parsed connections with their lines; malformed ones are reported."""
    items = doc.data.get("connections")
    if not isinstance(items, list):
        return []  # missing, empty, or reported by the file schema
    refs = []
    for i, item in enumerate(items):
        line = doc.line("connections", i)
        options: dict[str, Any] = {}
        if isinstance(item, dict):
            try:
                model = ConnectionModel.model_validate(item)
            except ValidationError as exc:
                for loc, problem in connection_problems(exc):
                    problems.add(problem, doc.line("connections", i, *loc))
                continue
            item = model.connect
            options = {"routing": model.routing, "key": model.key}
            line = doc.line("connections", i, "connect")
        if not isinstance(item, str):
            continue  # reported by the file schema
        ref = parse_connection(item)
        if ref is None:
            problems.add(f"malformed connection {item!r}: write it as {CONNECTION_HINT}", line)
        else:
            refs.append(ConnectionItem(ref, line, options, doc.line("connections", i, "key")))
    return refs
