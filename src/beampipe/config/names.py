"""What a node's name and a pipeline's name may be: what every transport, backend and file
system can carry.

A node's name is part of its socket paths (``ipc://RUNDIR/NODE-REPLICA-PORT``: at most 107 bytes
on Linux, see :mod:`beampipe.transport.address`), of its log files and of its Slurm and Nomad
names. A pipeline's name is part of its run directory's and log folder's names.
"""

from __future__ import annotations

import re

NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
"""A node or port name: ASCII letters, digits, ``_`` and ``-``, not starting with a digit or
``-`` (a ``.`` would clash with ``node.port`` in connections)."""

MAX_NODE_NAME = 32
"""Characters of a node's name."""

MAX_PIPELINE_NAME = 64
"""Bytes (UTF-8) of a pipeline's name."""

_NAME = re.compile(rf"^{NAME}$")
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


def node_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a node's name, or ``None`` if it is a valid one."""
    if not _NAME.match(name):
        return (
            "not a valid node name: use ASCII letters, digits, '_' and '-', starting with a "
            "letter or '_' (a '.' would clash with 'node.port' in connections)"
        )
    if len(name) > MAX_NODE_NAME:
        return (
            f"node name of {len(name)} characters: at most {MAX_NODE_NAME} (it is part of the "
            "node's socket paths, which are limited to 107 bytes)"
        )
    return None


def pipeline_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a pipeline's name (a file name: the run directory and the
    log folder are named after it), or ``None`` if it is a valid one."""
    size = len(name.encode("utf-8", "surrogatepass"))
    rule = (
        f"a file name of at most {MAX_PIPELINE_NAME} bytes, without '/', '\\' or control "
        "characters, not starting with '.', '-' or a space"
    )
    if not name.strip():
        return f"the pipeline's name is empty: it should be {rule}"
    if size > MAX_PIPELINE_NAME:
        return f"the pipeline's name {name[:40]!r}... is {size} bytes long: it should be {rule}"
    if _UNSAFE.search(name) or name[0] in ".- ":
        return f"the pipeline's name {name!r} should be {rule}"
    return None
