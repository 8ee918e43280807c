"""The websocket protocol between the viewer and a page: pushed updates, one at a time.

Messages are JSON text frames (docs/viewer.md, "Websocket protocol"). The server sends
``hello`` (the pipeline graph) and then ``update`` s: the status of the run and its nodes, the
stream list and, for the node the page selected, the plot of each output port. Each message has
a ``seq`` number, and the server sends the next one only after the page acknowledged the last
(``{"type": "ack", "seq": n}``): a slow page gets fewer, always current, updates; nothing queues
up for it, in the server or in the browser. At most one update is sent every :data:`TICK`
seconds, and only when something changed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

TICK = 0.25
"""Seconds between looks for something new to send to a page."""
STATUS_EVERY = 0.5
"""Seconds a status sample is reused before the launcher is read again."""


def dumps(obj: Any) -> bytes:
    """JSON with numpy arrays as lists and non-finite floats as ``null`` (orjson)."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def _text(obj: Any) -> str:
    return dumps(obj).decode()


@dataclass
class Stats:
    """Counters of the pushed updates, over all pages."""

    clients: int = 0
    updates_sent: int = 0
    updates_held_back: int = 0
    """Ticks at which an update was due but the page had not acknowledged the last one."""


@dataclass
class _Page:
    """What one connected page chose and was sent."""

    node: str | None = None
    keys: dict[str, str] = field(default_factory=dict)
    """Per output port of the node: the data item to plot (default: the port's signal)."""
    slices: dict[str, int] = field(default_factory=dict)
    """Per output port: the slice of a stack of images to show (default: the first)."""
    acked: int = 0
    selection: int = 0
    """Incremented at each ``select`` from the page."""
    selection_sent: int = -1
    """:attr:`selection` when the plots were last sent."""
    status_sent: float = -1.0
    versions_sent: dict[str, int] = field(default_factory=dict)


class Hub:
    """Serves the pages of one viewer (see :class:`beampipe.viewer.server.Viewer`)."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.stats = Stats()
        self._status: dict[str, Any] | None = None
        self._status_time = -1.0
        self._status_lock = asyncio.Lock()

    async def status(self) -> tuple[float, dict[str, Any]]:
        """(sample time, status): sampled from the launcher at most every
        :data:`STATUS_EVERY` seconds, shared by all pages."""
        async with self._status_lock:
            now = time.monotonic()
            if self._status is None or now - self._status_time >= STATUS_EVERY:
                self._status = await asyncio.to_thread(self.viewer.status)
                self._status_time = now
            return self._status_time, self._status

    def _versions(self, node: str | None) -> dict[str, int]:
        """The preview version of each output port of ``node``."""
        if node is None:
            return {}
        ports = self.viewer.previews.ports.get(node, [])
        with self.viewer.previews.locked() as previews:
            return {p: previews[node, p].version for p in ports}

    def _plots(self, node: str, page: _Page) -> tuple[dict[str, int], dict[str, Any]]:
        """(versions, plots) of the output ports of ``node``, read together, as ``page``
        chose them."""
        ports = self.viewer.previews.ports.get(node, [])
        keys, slices = dict(page.keys), dict(page.slices)
        with self.viewer.previews.locked() as previews:
            versions = {p: previews[node, p].version for p in ports}
            plots = {p: previews[node, p].payload(keys.get(p), slices.get(p)) for p in ports}
        return versions, plots

    async def serve(self, ws: WebSocket) -> None:
        """Talk to one page until it goes away."""
        await ws.accept()
        page = _Page()
        self.stats.clients += 1
        reader = asyncio.create_task(self._read(ws, page))
        try:
            seq = 1
            hello = {"type": "hello", "seq": seq, "pipeline": self.viewer.graph()}
            await ws.send_text(dumps(hello).decode())
            while not reader.done():
                await asyncio.sleep(TICK)
                t_status, status = await self.status()
                node, selection = page.node, page.selection
                plots_due = node is not None and (
                    selection != page.selection_sent or self._versions(node) != page.versions_sent
                )
                if not plots_due and t_status <= page.status_sent:
                    continue
                if page.acked < seq:
                    self.stats.updates_held_back += 1
                    continue
                seq += 1
                update: dict[str, Any] = {"type": "update", "seq": seq, "node": node, **status}
                if plots_due:
                    assert node is not None
                    versions, update["plots"] = await asyncio.to_thread(self._plots, node, page)
                    page.versions_sent, page.selection_sent = versions, selection
                page.status_sent = t_status
                await ws.send_text(await asyncio.to_thread(_text, update))
                self.stats.updates_sent += 1
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the page went away
        finally:
            reader.cancel()
            self.stats.clients -= 1

    async def _read(self, ws: WebSocket, page: _Page) -> None:
        """Take the page's acknowledgements and selections until it disconnects."""
        try:
            while True:
                msg = orjson.loads(await ws.receive_text())
                if not isinstance(msg, dict):
                    continue
                if msg.get("type") == "ack" and isinstance(msg.get("seq"), int):
                    page.acked = max(page.acked, msg["seq"])
                elif msg.get("type") == "select":
                    node = msg.get("node")
                    page.node = node if node in self.viewer.previews.ports else None
                    keys = msg.get("keys")
                    page.keys = (
                        {str(k): str(v) for k, v in keys.items()} if isinstance(keys, dict) else {}
                    )
                    slices = msg.get("slices")
                    page.slices = (
                        {str(k): v for k, v in slices.items() if isinstance(v, int)}
                        if isinstance(slices, dict)
                        else {}
                    )
                    page.selection += 1
        except (WebSocketDisconnect, orjson.JSONDecodeError, RuntimeError):
            return
