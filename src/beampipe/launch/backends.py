"""The one registry of backends: where a pipeline's node processes run.

A backend is a :class:`~beampipe.launch.placement.Placement` class, named here; the names are
:data:`beampipe.config.BACKENDS` (what a pipeline file's ``backend:``, ``beampipe deploy
--backend`` and the manager's API accept). To add a backend: write its placement (the
``Placement`` protocol), add its name to ``beampipe.config.model.Backend`` and its class here.
The cluster backends are imported only when asked for.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from beampipe.config import BACKENDS
from beampipe.launch.placement import Placement

PLACEMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "local": ("beampipe.launch.placement:LocalPlacement", {"transport": "tcp"}),
    "slurm": ("beampipe.launch.slurm:SlurmPlacement", {}),
    "nomad": ("beampipe.launch.nomad:NomadPlacement", {}),
}
"""Per backend name: its placement class (``module:Class``) and the defaults of its options
for a deployed pipeline (a deployed local pipeline talks over loopback TCP)."""


def make_placement(backend: str, options: dict[str, Any]) -> Placement:
    """The placement of ``backend`` built with ``options`` (over the defaults of
    :data:`PLACEMENTS`) as keyword arguments: ``local``: ``transport`` (``tcp`` or ``ipc``);
    ``slurm``: ``partition``, ``time``, ...; ``nomad``: ``address``, ``token``, ... (their
    classes' parameters).

    Raises:
        ValueError: an unknown backend, or an option its placement does not take.
        ImportError: the backend's module cannot be imported.
    """
    if backend not in PLACEMENTS:
        raise ValueError(f"unknown backend {backend!r} (backends: {', '.join(BACKENDS)})")
    path, defaults = PLACEMENTS[backend]
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(f"backend {backend!r} cannot be loaded: {exc}") from exc
    accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"backend {backend!r}: unknown option {', '.join(map(repr, unknown))} "
            f"(options: {', '.join(accepted) or 'none'})"
        )
    return cls(**{**defaults, **options})
