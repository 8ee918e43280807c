"""The live viewer and monitoring dashboard of a running pipeline (``beampipe run --ui``).

Needs the ``ui`` extra (``pip install 'beampipe[ui]'``). See docs/viewer.md and
:class:`~beampipe.viewer.server.Viewer`.
"""

from beampipe.viewer.server import Viewer

__all__ = ["Viewer"]
