"""The viewer's side of the taps: one SUB socket per node replica, decoded into previews.

:class:`Subscriber` is a thread. It connects to each replica's tap (:mod:`beampipe.runtime.tap`)
as soon as the launcher knows its endpoint, subscribes to every output port of the node, and
folds what arrives into the :class:`Previews` of (node, port). It never sends anything to the
nodes but subscriptions: when it falls behind, the taps drop (they never block), so the
pipeline's throughput does not depend on the viewer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import zmq

from beampipe.config import Pipeline
from beampipe.launch.status import RunStatus
from beampipe.message import Item, Message, WireError, decode
from beampipe.runtime.tap import topic
from beampipe.transport.security import Credentials
from beampipe.viewer.previews import PortPreview

log = logging.getLogger(__name__)

POLL_MS = 100
"""Milliseconds between looks for new taps (and image binning) when nothing arrives."""
BATCH = 256
"""Items taken from one socket before the others get their turn."""


class Previews:
    """The :class:`PortPreview` of every (node, output port), behind one lock.

    Attributes:
        ports: ``{node: [output ports]}`` of the pipeline.
        corrupt: tap messages that could not be decoded (skipped).
        failed: tap items whose preview raised (skipped: the preview keeps what it had, and
            the thread goes on with the next item).
        failure: the first such error, naming node, port, stream and id; None if none.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.ports: dict[str, list[str]] = {
            node: list(dict.fromkeys(c.source_port for c in pipeline.outputs_of(node)))
            for node in pipeline.nodes
        }
        self.previews = {(n, p): PortPreview() for n, ports in self.ports.items() for p in ports}
        self.corrupt = 0
        self.failed = 0
        self.failure: str | None = None
        self.lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[dict[tuple[str, str], PortPreview]]:
        """The previews, while nothing else changes them."""
        with self.lock:
            yield self.previews

    def counts(self) -> dict[tuple[str, str], tuple[int, int, int, int]]:
        """Per (node, port): messages seen, image previews made, frames skipped, version."""
        with self.lock:
            return {
                k: (p.messages, p.images_binned, p.images_skipped, p.version)
                for k, p in self.previews.items()
            }


class Subscriber(threading.Thread):
    """Reads the taps of a running pipeline into ``previews`` until :meth:`stop`.

    Args:
        status: returns the launcher's latest :class:`~beampipe.launch.status.RunStatus` (or
            None): a replica's ``tap`` endpoint, once bound, is subscribed to; a new endpoint,
            e.g. after a restart, is reconnected.
        previews: where the items go.
        credentials: the run's (:attr:`beampipe.launch.Launcher.credentials`): the taps admit
            only subscribers that present them (None: no run, so no tap, is watched).
    """

    def __init__(
        self,
        status: Callable[[], RunStatus | None],
        previews: Previews,
        credentials: Credentials | None,
    ) -> None:
        super().__init__(name="beampipe-viewer-subscriber", daemon=True)
        self.status = status
        self.previews = previews
        self.credentials = credentials
        self._stopping = threading.Event()
        self._ctx = zmq.Context()
        self._sockets: dict[tuple[str, int], tuple[str, zmq.Socket]] = {}

    def stop(self) -> None:
        """Ask the thread to end (it closes its sockets) and wait for it."""
        self._stopping.set()
        if self.is_alive():
            self.join(5)

    def _connect_new(self, poller: zmq.Poller) -> None:
        status = self.status()
        for rep in status.replicas if status is not None else ():
            ports = self.previews.ports.get(rep.node)
            endpoint = rep.tap
            key = (rep.node, rep.replica)
            if not ports or endpoint is None:
                continue
            known = self._sockets.get(key)
            if known is not None and known[0] == endpoint:
                continue
            if known is not None:
                poller.unregister(known[1])
                known[1].close(linger=0)
            sock = self._ctx.socket(zmq.SUB)
            if self.credentials is not None:
                self.credentials.client(sock)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 1000)
            for port in ports:
                sock.setsockopt(zmq.SUBSCRIBE, topic(port))
            sock.connect(endpoint)
            poller.register(sock, zmq.POLLIN)
            self._sockets[key] = (endpoint, sock)

    def run(self) -> None:
        poller = zmq.Poller()
        node_of = {}
        try:
            while not self._stopping.is_set():
                self._connect_new(poller)
                node_of = {sock: key[0] for key, (_, sock) in self._sockets.items()}
                ready = dict(poller.poll(POLL_MS))
                for sock in ready:
                    self._drain(node_of[sock], sock)
                with self.previews.locked() as previews:
                    for (node, port), preview in previews.items():
                        try:
                            preview.tick()
                        except Exception as exc:  # as in _drain
                            self._failed(f"{node}.{port}", exc)
        finally:
            for _, sock in self._sockets.values():
                sock.close(linger=0)
            self._ctx.term()

    def _drain(self, node: str, sock: zmq.Socket) -> None:
        for _ in range(BATCH):
            try:
                port, *frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            name = port.bytes[:-1].decode(errors="replace")
            try:
                item = decode(frames)
            except WireError:
                with self.previews.lock:
                    self.previews.corrupt += 1
                continue
            with self.previews.locked() as previews:
                preview = previews.get((node, name))
                if preview is None:
                    continue
                try:
                    preview.add(item)
                except Exception as exc:  # a preview bug must not stop the live view
                    self._failed(_where(node, name, item), exc)

    def _failed(self, where: str, exc: Exception) -> None:
        """Count a preview that raised; log the first and every 100th (the caller holds the
        previews' lock)."""
        previews = self.previews
        previews.failed += 1
        text = f"viewer: no preview of {where}: {type(exc).__name__}: {exc}"
        if previews.failure is None:
            previews.failure = text
        if previews.failed == 1 or previews.failed % 100 == 0:
            log.warning("%s (%d so far; the run is not affected)", text, previews.failed)


def _where(node: str, port: str, item: Item) -> str:
    """``node.port, stream 's', id 3`` (no id for a stream marker)."""
    where = f"{node}.{port}, stream {item.stream!r}"
    return f"{where}, id {item.id}" if isinstance(item, Message) else where
