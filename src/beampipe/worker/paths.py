"""``InputPath``: a parameter type for files a node reads, relative to the pipeline file."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo


def _resolve(value: str, info: ValidationInfo) -> str:
    path = os.path.expanduser(value)
    base = (info.context or {}).get("base_dir")
    if base and not os.path.isabs(path):
        path = os.path.join(base, path)
    return path


InputPath = Annotated[str, AfterValidator(_resolve)]
"""A path (or glob pattern) a node reads. ``~`` is expanded; a relative path is taken relative to
the folder of the pipeline file (the ``base_dir`` validation context), so a pipeline and its
data can move together. Paths a node *writes* are plain ``str``: relative to the working
directory."""
