"""FAKE ``asapo_producer``: the functions, classes, exceptions and ingest-mode constants of the
official wheel (25.3) that beampipe uses, with their documented behaviour, on
:mod:`asapo_fake.broker`. Not the real client and not the real service (see :mod:`asapo_fake`).

As in the real client, ``send`` checks its input, queues the request and returns; a background
thread sends it (a request not done within the producer's ``timeout_ms`` of being queued fails
with ``AsapoTimeOutError``) and then calls ``callback(info, err)`` with ``info = {"id",
"buffer" (the exposed path), "stream", "server_response"}`` and ``err`` None or an exception
(a timeout when the service cannot be reached, ``AsapoWrongInputError`` for a bad token, ...).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from asapo_fake.connection import BrokerError, Connection, NoReply

INGEST_MODE_TRANSFER_DATA = 1
INGEST_MODE_TRANSFER_METADATA_ONLY = 2
INGEST_MODE_STORE_IN_FILESYSTEM = 4
INGEST_MODE_STORE_IN_DATABASE = 8
INGEST_MODE_WRITE_RAW_DATA_TO_OFFLINE_FS = 16
DEFAULT_INGEST_MODE = 13
CACHE_ONLY_INGEST_MODE = 9


class AsapoProducerError(Exception):
    pass


class AsapoWrongInputError(AsapoProducerError):
    pass


class AsapoLocalIOError(AsapoProducerError):
    pass


class AsapoTimeOutError(AsapoProducerError):
    pass


class AsapoServerWarning(AsapoProducerError):
    pass


class AsapoRequestsPoolIsFull(AsapoProducerError):
    pass


class AsapoUnsupportedClientError(AsapoProducerError):
    pass


Callback = Callable[[dict[str, Any], Exception | None], None]
Request = tuple[str, dict[str, Any], dict[str, Any], Callback | None, float]
"""(op, args, info for the callback, callback, monotonic deadline)."""


class PyProducer:
    """A producer for one beamtime's data source (see ``create_producer``)."""

    def __init__(
        self,
        endpoint: str,
        source_type: str,
        credentials: dict[str, str],
        timeout_ms: int,
    ) -> None:
        self.endpoint = endpoint
        self.source_type = source_type
        self.credentials = credentials
        self.timeout_ms = int(timeout_ms)
        self.limit = 0
        self.requests: queue.Queue[Request] = queue.Queue()
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def _work(self) -> None:
        connection = Connection(self.endpoint, self.credentials)
        while True:
            op, args, info, callback, deadline = self.requests.get()
            err: Exception | None = None
            try:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    raise NoReply()
                answer = connection.call(op, left_ms, **args)
                info["server_response"] = answer["server_response"]
            except NoReply:
                err = AsapoTimeOutError(
                    f"error: Timeout, message: request id:{info['id']}, for {info['stream']} stream"
                )
            except BrokerError as exc:
                err = globals()[exc.kind](exc.message)
            if callback is not None:
                callback(info, err)
            self.requests.task_done()

    def _queue(self, op: str, args: dict[str, Any], info: dict[str, Any], callback: Any) -> None:
        if self.limit and self.requests.qsize() >= self.limit:
            raise AsapoRequestsPoolIsFull("error: requests pool is full")
        deadline = time.monotonic() + self.timeout_ms / 1000
        self.requests.put((op, args, info, callback, deadline))

    def set_log_level(self, level: str) -> None:
        """Log levels are accepted and ignored (the fake does not log)."""

    def set_requests_queue_limits(self, size: int = 0, volume_mb: int = 0) -> None:
        self.limit = int(size)

    def get_requests_queue_size(self) -> int:
        return self.requests.unfinished_tasks

    def send(
        self,
        id: int,
        exposed_path: str,
        data: Any,
        user_meta: str | dict[str, Any] | None = None,
        dataset: tuple[int, int] | None = None,
        ingest_mode: int = DEFAULT_INGEST_MODE,
        stream: str | None = None,
        callback: Callback | None = None,
        auto_id: bool = False,
    ) -> None:
        """Queue one message (or one substream ``dataset = (k, n)``); see the module doc."""
        if id == 0 and not auto_id:
            raise AsapoWrongInputError("error: wrong input, details: message id must be > 0")
        if ingest_mode & INGEST_MODE_TRANSFER_METADATA_ONLY:
            payload = b""
        elif isinstance(data, np.ndarray):
            if not data.flags.c_contiguous:
                raise AsapoWrongInputError("cannot do no-copy flatten - non-contiguous array?")
            payload = data.tobytes()
        elif isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
        else:
            raise AsapoWrongInputError(f"wrong data type: {type(data)}")
        meta = json.loads(user_meta) if isinstance(user_meta, str) else dict(user_meta or {})
        if dataset is not None and not 0 < dataset[0] <= dataset[1]:
            raise AsapoWrongInputError(f"error: wrong input, details: dataset {dataset}")
        stream = stream or "default"
        args = {
            "stream": stream,
            "id": id,
            "name": exposed_path,
            "data": payload,
            "meta": meta,
            "dataset": list(dataset) if dataset else None,
            "ingest_mode": ingest_mode,
            "type": self.source_type,
        }
        self._queue("send", args, {"id": id, "buffer": exposed_path, "stream": stream}, callback)

    def send_stream_finished_flag(
        self,
        stream: str,
        last_id: int,
        next_stream: str | None = None,
        callback: Callback | None = None,
    ) -> None:
        args = {"stream": stream, "last_id": last_id, "next_stream": next_stream}
        info = {"id": last_id + 1, "buffer": "asapo_finish_stream", "stream": stream}
        self._queue("finish", args, info, callback)

    def send_stream_meta(
        self,
        metadata: str | dict[str, Any],
        mode: str = "replace",
        upsert: bool = True,
        stream: str | None = None,
        callback: Callback | None = None,
    ) -> None:
        meta = json.loads(metadata) if isinstance(metadata, str) else dict(metadata)
        stream = stream or "default"
        args = {"stream": stream, "meta": meta, "mode": mode, "upsert": upsert}
        self._queue("put_stream_meta", args, {"id": 0, "buffer": "", "stream": stream}, callback)

    def wait_requests_finished(self, timeout_ms: int) -> None:
        """Wait until every queued request was sent and its callback called."""
        deadline = time.monotonic() + timeout_ms / 1000
        with self.requests.all_tasks_done:
            while self.requests.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AsapoTimeOutError("error: Timeout, message: requests not finished")
                self.requests.all_tasks_done.wait(left)

    def cleanup(self) -> None:
        """The real client stops its threads here; the fake's thread is a daemon."""


def create_producer(
    endpoint: str,
    type: str,
    beamtime_id: str,
    beamline: str,
    data_source: str,
    token: str,
    nthreads: int,
    timeout_ms: int,
    instance_id: str = "auto",
    pipeline_step: str = "auto",
) -> PyProducer:
    """A producer; like the real one, it does not contact the service until it sends."""
    if type not in ("raw", "processed"):
        raise AsapoWrongInputError(f"error: wrong input, details: source type {type}")
    if nthreads < 1:
        raise AsapoWrongInputError("error: wrong input, details: number of threads")
    credentials = {"beamtime": beamtime_id, "data_source": data_source, "token": token}
    return PyProducer(endpoint, type, credentials, timeout_ms)
