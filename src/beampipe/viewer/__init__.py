"""The live viewer and monitoring dashboard of a running pipeline (``run --ui``, ``deploy --ui``).

Needs the ``ui`` extra (``pip install 'beampipe[ui]'``). See docs/viewer.md and
:class:`~beampipe.viewer.server.Viewer`. :func:`open_viewer` is how ``beampipe run`` and a
supervisor make one; this module imports the viewer's packages only when asked to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from beampipe.config import Pipeline
    from beampipe.viewer.server import Viewer

__all__ = ["Viewer", "ViewerUnavailable", "check_packages", "open_viewer"]


class ViewerUnavailable(Exception):
    """The viewer cannot start: its packages are missing or its address cannot be bound (the
    message says which and what to do)."""


def check_packages() -> None:
    """Raises :class:`ViewerUnavailable` if the ``ui`` extra's packages cannot be imported."""
    try:
        import beampipe.viewer.server  # noqa: F401 - only whether it can be imported
    except ImportError as exc:
        raise ViewerUnavailable(
            f"--ui needs the viewer's packages: pip install 'beampipe[ui]' ({exc})"
        ) from None


def open_viewer(
    pipeline: Pipeline, host: str = "127.0.0.1", port: int = 0, extra_hosts: Sequence[str] = ()
) -> Viewer:
    """The live viewer of ``pipeline``, listening on ``host``:``port`` (0: any free port),
    reachable by the localhost names, this machine's names and ``extra_hosts``
    (``--ui-allowed-host``; docs/viewer.md, "Who may connect").

    Raises:
        ViewerUnavailable: the ``ui`` extra's packages are missing, the address cannot be
            bound (e.g. the port is taken), or an ``extra_hosts`` entry is not a host name.
    """
    check_packages()
    from beampipe.viewer.server import Viewer

    try:
        return Viewer(pipeline, host, port, extra_hosts)
    except OSError as exc:
        raise ViewerUnavailable(f"--ui: cannot listen on {host} port {port}: {exc}") from None
    except ValueError as exc:
        raise ViewerUnavailable(f"--ui-allowed-host {exc}") from None


def __getattr__(name: str) -> Any:
    if name == "Viewer":
        from beampipe.viewer.server import Viewer

        return Viewer
    raise AttributeError(name)
