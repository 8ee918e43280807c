"""``InputPath`` and ``OutputPath``: parameter types for files a node reads (relative to the
pipeline file) and writes."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo


def _resolve(value: str, info: ValidationInfo) -> str:
    if "\0" in value:
        raise ValueError(f"the path {value!r} holds a NUL character")
    path = os.path.expanduser(value)
    base = (info.context or {}).get("base_dir")
    if base and not os.path.isabs(path):
        path = os.path.join(base, path)
    return path


def _writable(value: str) -> str:
    path = os.path.expanduser(value)
    if not path.strip():
        raise ValueError("the path is empty: it should name the file to write")
    if "\0" in path:
        raise ValueError(f"the path {value!r} holds a NUL character")
    if path.endswith(("/", os.sep)) or os.path.basename(path) in (".", ".."):
        raise ValueError(f"the path {value!r} names a folder: it should name the file to write")
    if os.path.isdir(path):
        raise ValueError(f"{value!r} is an existing folder: it should name the file to write")
    return value


InputPath = Annotated[str, AfterValidator(_resolve)]
"""A path (or glob pattern) a node reads. ``~`` is expanded; a relative path is taken relative to
the folder of the pipeline file (the ``base_dir`` validation context), so a pipeline and its
data can move together. Paths a node *writes* are :data:`OutputPath`: relative to the working
directory."""

OutputPath = Annotated[str, AfterValidator(_writable)]
"""A file a node writes (relative to the working directory, ``~`` expanded by the node): not
empty, no NUL character, not a folder (an existing one, or one written with a trailing ``/``)."""
