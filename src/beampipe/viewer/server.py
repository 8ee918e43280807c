"""The viewer: a web server in a thread of the ``beampipe run --ui`` process.

:class:`Viewer` binds its port at once (so the URL can be printed before the run starts), and
:meth:`Viewer.start` starts two daemon threads next to the launcher's loop: the tap subscriber
(:mod:`beampipe.viewer.subscriber`) and uvicorn serving the FastAPI app of :func:`create_app`.
Neither ever blocks the launcher: they only read its fields. Endpoints (all read-only; see
docs/viewer.md):

* ``/``: the page (``static/``), ``/vendor/plotly.min.js`` (from the ``plotly`` package);
* ``/ws``: the websocket of the page (:mod:`beampipe.viewer.websocket`);
* ``/api/pipeline``, ``/api/status``, ``/api/plot/{node}/{port}?key=&slice=``: the same data
  as JSON;
* ``/api/files`` and ``/api/files/{node}/meta|attr|data|stats``: the sinks' HDF5 files (h5grove);
* ``/metrics``: Prometheus (:mod:`beampipe.viewer.prometheus`).

Only requests for the viewer's own host names are answered, and the websocket only for its own
pages (:mod:`beampipe.viewer.hosts`).
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Query, WebSocket
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from h5grove.encoders import encode
from h5grove.utils import QueryArgumentError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.status import WS_1008_POLICY_VIOLATION

from beampipe.config import Pipeline
from beampipe.launch.replica import RunObserver
from beampipe.launch.status import RunStatus
from beampipe.viewer.files import FileError, SinkFiles
from beampipe.viewer.hosts import HostCheck, Refusals, allowed_hosts, log, origin_refusal
from beampipe.viewer.prometheus import RunCollector, registry
from beampipe.viewer.status import RunState, Tee
from beampipe.viewer.subscriber import Previews, Subscriber
from beampipe.viewer.websocket import Hub, dumps

STATIC = Path(__file__).with_name("static")
PLOTLY_JS = files("plotly").joinpath("package_data", "plotly.min.js")
"""Plotly.js as shipped in the ``plotly`` Python package (no CDN: the page works offline)."""
MAX_ELEMENTS = 1 << 24
"""Dataset elements one ``/api/files/.../data`` request may read (ask for a selection)."""


class Viewer:
    """The live viewer of one run.

    Args:
        pipeline: the pipeline being run.
        host: address to listen on (``127.0.0.1``: this machine only; the page is read-only,
            but shows the data).
        port: TCP port; 0 lets the OS choose a free one (see :attr:`url`).
        extra_hosts: more names (or ``*.domain`` patterns) the page may be reached by, besides
            the localhost names and, when ``host`` is not loopback, this machine's names
            (:func:`beampipe.viewer.hosts.allowed_hosts`); its pages may open the websocket.

    Raises:
        OSError: the address cannot be bound (e.g. the port is taken).
        ValueError: an ``extra_hosts`` entry is not a host name.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_hosts: Sequence[str] = (),
    ) -> None:
        self.pipeline = pipeline
        self.hosts = allowed_hosts(host, extra_hosts)
        """The ``Host`` names the viewer answers."""
        self.extra_hosts = list(extra_hosts)
        self.refusals = Refusals()
        """Requests refused for their ``Host`` or ``Origin``."""
        self.state = RunState(pipeline)
        self.previews = Previews(pipeline)
        self.files = SinkFiles(pipeline)
        self.hub = Hub(self)
        self.launcher: Any = None
        """The launcher being watched (:meth:`start`): only its published
        :class:`~beampipe.launch.status.RunStatus` is read."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family)
        bound = self.socket.getsockname()[1]
        shown = socket.gethostname() if _unspecified(host) else host
        self.url = f"http://[{shown}]:{bound}/" if ":" in shown else f"http://{shown}:{bound}/"
        """Where the page is."""
        self.collector = RunCollector(pipeline.name, self.run_status, self.viewer_counts)
        self.registry = registry(self.collector)
        self.app = create_app(self)
        self._subscriber: Subscriber | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def observer(self, inner: RunObserver) -> RunObserver:
        """The observer to give the launcher: reports go to ``inner`` and to the viewer."""
        return Tee(inner, self.state)

    def start(self, launcher: Any) -> None:
        """Start watching ``launcher`` (a :class:`~beampipe.launch.Launcher`, before or
        while it runs) and serving the page."""
        self.launcher = launcher
        credentials = launcher.credentials if launcher is not None else None
        self._subscriber = Subscriber(self.run_status, self.previews, credentials)
        self._subscriber.start()
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self.socket]},
            name="beampipe-viewer-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and subscribing (waits a few seconds at most)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
        if self._subscriber is not None:
            self._subscriber.stop()
        self.socket.close()

    def serve_until_interrupted(self) -> None:
        """Keep serving (the run is over: its final plots and files stay browsable) until
        SIGINT (Ctrl-C) or SIGTERM; then :meth:`stop`."""
        stop = threading.Event()
        previous = {
            s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            while not stop.wait(0.5):
                pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.stop()

    # -- what the endpoints serve --------------------------------------------------------------

    def graph(self) -> dict[str, Any]:
        """The pipeline: nodes (name, use, replicas, kind, ports, file) and connections."""
        p = self.pipeline
        sources, sinks = set(p.sources()), set(p.sinks())
        nodes = []
        for name, spec in p.nodes.items():
            kind = "source" if name in sources else "sink" if name in sinks else "worker"
            nodes.append(
                {
                    "name": name,
                    "use": spec.use,
                    "replicas": spec.replicas,
                    "kind": kind,
                    "inputs": list(dict.fromkeys(c.target_port for c in p.inputs_of(name))),
                    "outputs": self.previews.ports.get(name, []),
                    "file": str(self.files.paths[name]) if name in self.files.paths else None,
                }
            )
        connections = [
            {
                "source": c.source,
                "source_port": c.source_port,
                "target": c.target,
                "target_port": c.target_port,
                "routing": c.routing,
            }
            for c in p.connections
        ]
        return {"name": p.name, "nodes": nodes, "connections": connections}

    def run_status(self) -> RunStatus | None:
        """The watched launcher's latest published run status (None before it has one)."""
        return self.launcher.published if self.launcher is not None else None

    def viewer_counts(self) -> dict[tuple[str, str], tuple[int, int, int, int]]:
        """Per (node, port): tap messages received, image previews made, frames skipped,
        preview version."""
        return self.previews.counts()

    def status(self) -> dict[str, Any]:
        """The run, its nodes, its streams (with the file entries written for each) and the
        viewer's own counters (docs/viewer.md, "update")."""
        run = self.run_status()
        if run is None:
            out: dict[str, Any] = {"run": {"state": "starting", "elapsed": 0.0, "errors": []}}
            out["nodes"] = {}
        else:
            out = self.state.sample(run)
        streams = self.state.streams()
        entries = {node: self.files.entries(node) for node in self.files.paths}
        for s in streams:
            s["files"] = [
                {"node": node, "entry": found[s["name"]]}
                for node, found in entries.items()
                if s["name"] in found
            ]
        out["streams"] = streams
        stats = self.hub.stats
        out["viewer"] = {
            "ports": {
                f"{node}.{port}": {
                    "messages": m,
                    "images": b,
                    "images_skipped": k,
                }
                for (node, port), (m, b, k, _) in self.viewer_counts().items()
            },
            "clients": stats.clients,
            "updates_sent": stats.updates_sent,
            "updates_held_back": stats.updates_held_back,
            "refused": {"host": self.refusals.host, "origin": self.refusals.origin},
            "previews": {
                "undecodable": self.previews.corrupt,
                "failed": self.previews.failed,
                "failure": self.previews.failure,
            },
        }
        return out


def _unspecified(host: str) -> bool:
    """Whether ``host`` is 0.0.0.0 or :: (all interfaces)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def _client(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "an unknown client"


def create_app(viewer: Viewer) -> FastAPI:
    """The FastAPI app of ``viewer`` (endpoints: module docstring and docs/viewer.md)."""
    app = FastAPI(
        title=f"beampipe viewer: {viewer.pipeline.name}",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(
        HostCheck,
        hosts=viewer.hosts,
        refusals=viewer.refusals,
        server="viewer",
        option="--ui-allowed-host",
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(str(PLOTLY_JS), media_type="text/javascript")

    @app.get("/api/pipeline")
    def pipeline() -> Response:
        return _json(viewer.graph())

    @app.get("/api/status")
    def status() -> Response:
        return _json(viewer.status())

    @app.get("/api/plot/{node}/{port}")
    def plot(
        node: str,
        port: str,
        key: str | None = None,
        index: Annotated[int | None, Query(alias="slice")] = None,
    ) -> Response:
        with viewer.previews.locked() as previews:
            preview = previews.get((node, port))
            if preview is None:
                return _json({"message": f"no output port {node}.{port}"}, 404)
            return _json(preview.payload(key, index))

    _file_routes(app, viewer)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(viewer.registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        refusal = origin_refusal(websocket.headers, viewer.extra_hosts)
        if refusal is not None:
            viewer.refusals.origin += 1
            log.warning("viewer: refused a websocket from %s: %s", _client(websocket), refusal)
            await websocket.close(WS_1008_POLICY_VIOLATION)  # before accept: HTTP 403
            return
        await viewer.hub.serve(websocket)

    return app


def _file_routes(app: FastAPI, viewer: Viewer) -> None:
    """``/api/files``: the sinks' files, read through h5grove."""

    @app.get("/api/files")
    def file_list() -> Response:
        return _json(viewer.files.listing())

    @app.get("/api/files/{node}/meta")
    def meta(node: str, path: str = "/") -> Response:
        return _h5(viewer, node, path, lambda c: c.metadata())

    @app.get("/api/files/{node}/attr")
    def attr(
        node: str, path: str = "/", attr_keys: Annotated[list[str] | None, Query()] = None
    ) -> Response:
        return _h5(viewer, node, path, lambda c: c.attributes(attr_keys))

    @app.get("/api/files/{node}/data")
    def data(
        node: str,
        path: str = "/",
        selection: str | None = None,
        format: str = "json",
        flatten: bool = False,
        dtype: str = "safe",
    ) -> Response:
        def read(content: Any) -> Any:
            shape = _dataset(content, path).metadata().get("shape") or ()
            if selection is None and int(np.prod(shape, dtype=np.int64)) > MAX_ELEMENTS:
                raise FileError(413, f"{path}: too large to read whole; give a selection")
            return content.data(selection, flatten, dtype)

        return _h5(viewer, node, path, read, format)

    @app.get("/api/files/{node}/stats")
    def stats(node: str, path: str = "/", selection: str | None = None) -> Response:
        return _h5(viewer, node, path, lambda c: _dataset(c, path).data_stats(selection))


def _dataset(content: Any, path: str) -> Any:
    """``content`` if it is a dataset's (h5grove ``DatasetContent``); else FileError 422."""
    if content.kind != "dataset":
        raise FileError(422, f"{path} is a {content.kind}, not a dataset")
    return content


def _h5(viewer: Viewer, node: str, path: str, read: Any, encoding: str = "json") -> Response:
    """``read(content)`` of ``path`` in the file of ``node``, encoded by h5grove; errors as
    ``{"message": ...}`` with their HTTP status."""
    try:
        with viewer.files.content(node, path) as content:
            result = encode(read(content), encoding)
    except FileError as exc:
        return _json({"message": exc.message}, exc.status)
    except (QueryArgumentError, TypeError, ValueError, IndexError) as exc:
        return _json({"message": f"{path}: {exc}"}, 422)
    return Response(result.content, headers=result.headers)
