"""The fake ASAP::O broker: the shared state behind :mod:`asapo_fake.asapo_consumer` and
:mod:`asapo_fake.asapo_producer`. A FAKE for the tests, not the real service.

Run it as a process (``python -m asapo_fake.broker --beamtime BT --token-file F``); it prints
``endpoint HOST:PORT`` on its first line and serves requests (msgpack maps over a ZeroMQ
ROUTER socket) until it is terminated. Several client processes share it, as node replicas
share the real broker.

Semantics, after the documented client API and the broker's request handling:

* A beamtime has data sources; a data source has streams (created by their first message or
  finished flag, listed in creation order); a stream has messages (id >= 1, user ``meta`` dict,
  binary data, exposed path ``name``) or datasets (id -> substreams 1..n, ``dataset=(k, n)``
  on send), and possibly a finished flag (``last_id``, ``next_stream``) and stream metadata.
* Every request carries beamtime and token; a wrong token or an unknown beamtime is
  ``AsapoWrongInputError``.
* ``next`` for a consumer group: first a message whose resend is due (unacknowledged after the
  requester's ``set_resend_nacs`` delay, or negatively acknowledged and its delay passed),
  while it has resend attempts left; else the lowest id not yet delivered to the group (each
  message goes to one member of a group; other groups get everything again); else
  ``AsapoStreamFinishedError`` (``id_max`` = last id, ``next_stream``) for a finished stream,
  or ``AsapoEndOfStreamError`` (``id_max``), after waiting up to the requester's timeout for
  data. A dataset with fewer substreams than required (all, or ``min_size``) is delivered as
  ``AsapoPartialDataError`` carrying the partial dataset.
* ``neg_acknowledge(delay_ms)`` makes the message due again after the delay (the real broker
  keeps the due time of an existing resend record instead); it is resent once, or, if the
  delivering consumer had resend enabled, while that consumer's attempts last.

Test hooks that the real broker does not have: ``--quorum N`` holds every consumer group's
first delivery until N distinct consumers have asked (so that replicas started at different
times all take part), and the ``inspect`` request returns the deliveries, acknowledgements and
negative acknowledgements of every group.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq


class Fail(Exception):
    """A request fails with the client exception ``kind`` (its class name) and ``args``."""

    def __init__(self, kind: str, message: str, **args: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.args_ = args


class Wait(Fail):
    """No data yet: the request is held until data comes or its wait ends, then fails."""


@dataclass
class Record:
    """One message, or one substream of a dataset."""

    id: int
    name: str
    data: bytes
    meta: dict[str, Any]
    substream: int
    ingest_mode: int
    timestamp: int

    def info(self, stream: str) -> dict[str, Any]:
        """The message metadata as the consumer returns it (service fields and user ``meta``)."""
        return {
            "_id": self.id,
            "size": len(self.data),
            "name": self.name,
            "timestamp": self.timestamp,
            "source": "asapo_fake",
            "buf_id": 0,
            "stream": stream,
            "dataset_substream": self.substream,
            "ingest_mode": self.ingest_mode,
            "meta": self.meta,
        }


@dataclass
class Stream:
    name: str
    created: int
    last: int = 0
    messages: dict[int, Record] = field(default_factory=dict)
    datasets: dict[int, tuple[int, dict[int, Record]]] = field(default_factory=dict)
    """id -> (expected number of substreams, {substream: record})."""
    finished: bool = False
    last_id: int = 0
    next_stream: str = ""
    meta: dict[str, Any] | None = None

    def ids(self) -> list[int]:
        return sorted({*self.messages, *self.datasets})

    def info(self) -> dict[str, Any]:
        ids = self.ids()
        return {
            "lastId": self.last_id if self.finished else (ids[-1] if ids else 0),
            "name": self.name,
            "timestampCreated": self.created,
            "timestampLast": self.last,
            "finished": self.finished,
            "nextStream": self.next_stream,
        }


@dataclass
class Delivery:
    """A message delivered to a group: its resend record, as the broker's "inprocess" one."""

    due: float | None = None
    """Monotonic time at which it may be resent (None: no resend)."""
    attempts: int = 0
    max_attempts: float = 0
    acked: bool = False


@dataclass
class Group:
    deliveries: dict[int, Delivery] = field(default_factory=dict)
    log: list[tuple[int, str]] = field(default_factory=list)
    """(id, consumer) of every delivery, resends included, in order."""
    nacks: list[int] = field(default_factory=list)


class Broker:
    """The state of every beamtime, and the request handlers (``op_<name>``)."""

    def __init__(self, tokens: dict[str, str], quorum: int = 1) -> None:
        self.tokens = tokens
        self.quorum = quorum
        self.sources: dict[tuple[str, str], dict[str, Stream]] = {}
        self.groups: dict[tuple[str, str, str, str], Group] = {}
        self.members: dict[tuple[str, str, str], set[str]] = {}

    def handle(self, req: dict[str, Any]) -> Any:
        beamtime = req["beamtime"]
        if beamtime not in self.tokens:
            raise Fail("AsapoWrongInputError", f"error: wrong input, details: beamtime {beamtime}")
        if req["token"] != self.tokens[beamtime]:
            raise Fail(
                "AsapoWrongInputError",
                f"error: wrong input, details: authorization failed for beamtime {beamtime}",
            )
        return getattr(self, "op_" + req["op"])(req)

    def _streams(self, req: dict[str, Any]) -> dict[str, Stream]:
        return self.sources.setdefault((req["beamtime"], req["data_source"]), {})

    def _stream(self, req: dict[str, Any], create: bool = False) -> Stream | None:
        streams = self._streams(req)
        name = req["stream"]
        if name not in streams and create:
            streams[name] = Stream(name, time.time_ns())
        return streams.get(name)

    # -- consumer ------------------------------------------------------------------------------

    def op_source_list(self, req: dict[str, Any]) -> list[str]:
        return [
            ds for (bt, ds), streams in self.sources.items() if bt == req["beamtime"] and streams
        ]

    def op_stream_list(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        infos = [s.info() for s in self._streams(req).values()]
        names = [i["name"] for i in infos]
        if req["from_stream"]:
            start = names.index(req["from_stream"]) if req["from_stream"] in names else len(names)
            infos = infos[start:]
        if req["filter"] != "all":
            infos = [i for i in infos if i["finished"] == (req["filter"] == "finished")]
        return infos

    def op_stream_info(self, req: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(req)
        if stream is None:
            raise Fail("AsapoNoDataError", f"error: no data, details: stream {req['stream']}")
        return stream.info()

    def op_stream_meta(self, req: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(req)
        if stream is None or stream.meta is None:
            raise Fail(
                "AsapoNoDataError",
                f"error: no data, details: no metadata for stream {req['stream']}",
            )
        return stream.meta

    def op_current_size(self, req: dict[str, Any]) -> int:
        stream = self._stream(req)
        return len(stream.ids()) if stream else 0

    def op_group_id(self, req: dict[str, Any]) -> str:
        return uuid.uuid4().hex[:20]

    def op_next(self, req: dict[str, Any]) -> Any:
        key = (req["beamtime"], req["data_source"], req["group"])
        members = self.members.setdefault(key, set())
        members.add(req["consumer"])
        if len(members) < self.quorum:
            raise Wait("AsapoEndOfStreamError", "error: no data, details: waiting", id_max=0)
        stream = self._stream(req)
        if stream is None:
            raise Wait("AsapoEndOfStreamError", "error: end of stream", id_max=0)
        group = self.groups.setdefault((*key[:2], stream.name, req["group"]), Group())
        resend, delay_ms, attempts = req["resend"]
        now = time.monotonic()
        for i, d in sorted(group.deliveries.items()):
            if not d.acked and d.due is not None and d.due <= now and d.attempts < d.max_attempts:
                d.attempts += 1
                d.due = now + delay_ms / 1000 if d.attempts < d.max_attempts else None
                return self._deliver(req, stream, group, i)
        for i in stream.ids():
            if i not in group.deliveries:
                d = group.deliveries[i] = Delivery()
                if resend:
                    d.due = now + delay_ms / 1000
                    d.max_attempts = attempts or math.inf
                return self._deliver(req, stream, group, i)
        if stream.finished:
            raise Fail(
                "AsapoStreamFinishedError",
                f"error: stream finished, details: {stream.name}",
                id_max=stream.last_id,
                next_stream=stream.next_stream,
            )
        ids = stream.ids()
        raise Wait("AsapoEndOfStreamError", "error: end of stream", id_max=ids[-1] if ids else 0)

    def _deliver(self, req: dict[str, Any], stream: Stream, group: Group, i: int) -> Any:
        group.log.append((i, req["consumer"]))
        return self._record(req, stream, i)

    def _record(self, req: dict[str, Any], stream: Stream, i: int) -> Any:
        if not req["dataset"]:
            record = stream.messages[i]
            return {
                "meta": record.info(stream.name),
                "data": None if req["meta_only"] else record.data,
            }
        size, parts = stream.datasets[i]
        dataset = {
            "id": i,
            "expected_size": size,
            "content": [parts[k].info(stream.name) for k in sorted(parts)],
        }
        if len(parts) < (req["min_size"] or size):
            raise Fail("AsapoPartialDataError", "error: partial data", partial_data=dataset)
        return dataset

    def op_by_id(self, req: dict[str, Any]) -> Any:
        stream = self._stream(req)
        ids = stream.ids() if stream else []
        i = req["id"]
        if stream is not None and i in ids:
            return self._record(req, stream, i)
        if stream is not None and stream.finished and i > stream.last_id:
            raise Fail(
                "AsapoStreamFinishedError",
                "error: stream finished",
                id_max=stream.last_id,
                next_stream=stream.next_stream,
            )
        if ids and ids[-1] > i:
            raise Fail("AsapoNoDataError", "error: no data", id=i, id_max=ids[-1])
        raise Wait("AsapoEndOfStreamError", "error: end of stream", id_max=ids[-1] if ids else 0)

    def op_data(self, req: dict[str, Any]) -> bytes:
        stream = self._stream(req)
        i, k = req["id"], req["substream"]
        if stream is not None and k and i in stream.datasets and k in stream.datasets[i][1]:
            return stream.datasets[i][1][k].data
        if stream is not None and not k and i in stream.messages:
            return stream.messages[i].data
        raise Fail("AsapoWrongInputError", f"error: wrong input, details: no message {i}/{k}")

    def _delivery(self, req: dict[str, Any]) -> tuple[Group, Delivery]:
        group = self.groups.get((req["beamtime"], req["data_source"], req["stream"], req["group"]))
        if group is None or req["id"] not in group.deliveries:
            raise Fail(
                "AsapoWrongInputError",
                f"error: wrong input, details: message {req['id']} was not delivered to group "
                f"{req['group']} in stream {req['stream']}",
            )
        return group, group.deliveries[req["id"]]

    def op_ack(self, req: dict[str, Any]) -> None:
        _, d = self._delivery(req)
        d.acked, d.due = True, None

    def op_nack(self, req: dict[str, Any]) -> None:
        group, d = self._delivery(req)
        group.nacks.append(req["id"])
        d.acked = False
        d.due = time.monotonic() + req["delay_ms"] / 1000
        d.max_attempts = d.max_attempts or 1

    # -- producer ------------------------------------------------------------------------------

    def op_send(self, req: dict[str, Any]) -> dict[str, Any]:
        if not req["name"].startswith(req["type"] + "/"):
            raise Fail(
                "AsapoWrongInputError",
                f"error: wrong input, details: exposed path {req['name']!r} must start with "
                f"{req['type']}/ for a {req['type']} producer",
            )
        stream = self._stream(req, create=True)
        assert stream is not None
        k, size = req["dataset"] or (0, 0)
        record = Record(
            req["id"], req["name"], req["data"], req["meta"], k, req["ingest_mode"], time.time_ns()
        )
        if k:
            old = stream.datasets.setdefault(req["id"], (size, {}))[1].get(k)
        else:
            old = stream.messages.get(req["id"])
        if old is not None:
            if (old.name, len(old.data)) == (record.name, len(record.data)):
                raise Fail("AsapoServerWarning", "error: duplicated request")
            raise Fail(
                "AsapoWrongInputError",
                f"error: wrong input, details: already have record with id {req['id']}",
            )
        if k:
            stream.datasets[req["id"]][1][k] = record
        else:
            stream.messages[req["id"]] = record
        stream.last = record.timestamp
        return {"server_response": b""}

    def op_finish(self, req: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(req, create=True)
        assert stream is not None
        stream.finished, stream.last_id = True, req["last_id"]
        stream.next_stream = req["next_stream"] or ""
        return {"server_response": b""}

    def op_put_stream_meta(self, req: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(req, create=True)
        assert stream is not None
        if req["mode"] == "replace" or stream.meta is None:
            stream.meta = dict(req["meta"])
        else:
            stream.meta.update(req["meta"])
        return {"server_response": b""}

    # -- test hook -----------------------------------------------------------------------------

    def op_inspect(self, req: dict[str, Any]) -> dict[str, Any]:
        """``{"data_source/stream/group": {"log": [[id, consumer], ...], "acked": [...],
        "nacks": [...]}}`` for the request's beamtime."""
        return {
            f"{ds}/{stream}/{group}": {
                "log": g.log,
                "acked": sorted(i for i, d in g.deliveries.items() if d.acked),
                "nacks": g.nacks,
            }
            for (bt, ds, stream, group), g in self.groups.items()
            if bt == req["beamtime"]
        }


def serve(socket: zmq.Socket, broker: Broker) -> None:
    """Answer requests until the process is terminated. A request that has to wait for data
    (:class:`Wait`) is held and tried again after every request and every 10 ms, until its
    ``wait_ms`` have passed."""
    held: list[tuple[bytes, dict[str, Any], float]] = []
    while True:
        if socket.poll(10 if held else 1000):
            ident, frame = socket.recv_multipart()
            req = msgpack.unpackb(frame)
            held.append((ident, req, time.monotonic() + req.get("wait_ms", 0) / 1000))
        still = []
        for ident, req, deadline in held:
            try:
                reply = {"rid": req["rid"], "ok": broker.handle(req)}
            except Wait as exc:
                if time.monotonic() < deadline:
                    still.append((ident, req, deadline))
                    continue
                reply = {
                    "rid": req["rid"],
                    "error": exc.kind,
                    "message": exc.message,
                    "args": exc.args_,
                }
            except Fail as exc:
                reply = {
                    "rid": req["rid"],
                    "error": exc.kind,
                    "message": exc.message,
                    "args": exc.args_,
                }
            socket.send_multipart([ident, msgpack.packb(reply)])
        held = still


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beamtime", action="append", default=[], help="beamtime id")
    parser.add_argument("--token-file", action="append", default=[], help="its token, per beamtime")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quorum", type=int, default=1)
    args = parser.parse_args(argv)
    tokens = {
        bt: Path(f).read_text().strip()
        for bt, f in zip(args.beamtime, args.token_file, strict=True)
    }
    ctx = zmq.Context()
    socket = ctx.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    if args.port:
        socket.bind(f"tcp://127.0.0.1:{args.port}")
    else:
        socket.bind("tcp://127.0.0.1:*")
    endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT).removeprefix("tcp://")
    print(f"endpoint {endpoint}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(socket, Broker(tokens, args.quorum))


if __name__ == "__main__":
    main()
