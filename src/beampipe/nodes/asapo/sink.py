"""ASAP::O sink: ``use: asapo_sink`` (extra ``asapo``).

Sends every message it receives to a data source of a beamtime on DESY's ASAP::O streaming
platform with the official client ``asapo_producer`` (https://asapo.pages.desy.de/asapo/): the
beampipe stream becomes the ASAP::O stream, the message id the ASAP::O message id, the metadata
the message's ``meta``, and its arrays the binary data (the convention of
:mod:`beampipe.nodes.asapo.payload`, which ``asapo_source`` reads back). The connection,
token and client module are described in :mod:`beampipe.nodes.asapo.client`.

beampipe's tests run this sink against a FAKE of the documented client API and a fake broker
process (``tests/fakes/asapo_fake``), because no ASAP::O service stack can run there; they do
not show that it works against the real service.
"""

from __future__ import annotations

import json
import string
import threading
from functools import partial
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

import beampipe
from beampipe.nodes.asapo.client import (
    AsapoError,
    AsapoParams,
    connection_error,
    hint,
    load_client,
    read_token,
)
from beampipe.nodes.asapo.payload import encode

__all__ = ["AsapoSink"]

LABEL = "asapo_sink"

IngestFlag = Literal[
    "transfer_data",
    "transfer_metadata_only",
    "store_in_filesystem",
    "store_in_database",
    "write_raw_data_to_offline_fs",
]
"""The ingest-mode flags of ``asapo_producer`` (``INGEST_MODE_<FLAG>``), lower case."""

PATH_FIELDS = ("source_type", "beamtime", "data_source", "stream", "id", "substream")
"""The fields an ``exposed_path`` template may use."""

WAIT_GRACE = 2.0
"""Seconds added to ``timeout`` when waiting for queued requests (see ``_wait``)."""

MAX_LISTED = 10
"""Failed messages named one by one in an error (the rest are counted)."""


class AsapoSink(beampipe.Worker):
    """Sends each message to ASAP::O (``send``), one ASAP::O message per beampipe message.

    Per message: the entries of ``data`` named by ``fields`` (all, by default). One entry is
    sent as one ASAP::O message; several as a dataset, entry k (from 1) as substream
    ``(k, n)``. Each is sent with id = the message id, stream = the message's stream, the
    exposed path ``exposed_path`` (for a dataset with ``_{k}`` appended unless the template uses
    ``{substream}``), ``ingest_mode`` (the OR of the flags), and as ``meta`` the message's
    metadata plus ``dtype``, ``shape`` and ``data_name`` (arrays, C order) or ``data_name``
    only (``bytes``). With ``stream_metadata``, a stream's header (the ``StreamStart``
    metadata, if any) is sent as the ASAP::O stream metadata.

    ``send`` only queues a request; the client sends it in the background and calls back with
    the outcome. ``confirm: stream`` (default) waits for every callback of a stream at its end
    (``wait_requests_finished``), ``confirm: message`` after every message. Then each message
    that ASAP::O did not accept is reported in an :class:`AsapoError` naming its stream and
    id; under ``confirm: message`` it is raised from ``process``, so ``on_error: skip`` puts
    exactly that message into the dead-letter file. A duplicate that ASAP::O already holds
    (``AsapoServerWarning``) is not a failure.

    Finished flag: at the end of a stream, ``send_stream_finished_flag(stream, last id sent)``.
    With ``next_stream: true`` it is sent when the first message of another stream is sent,
    naming that stream as ``next_stream`` (so that consumers follow the chain), or when the run
    ends (no next stream). Run the node as one replica: the flag states the last id of the
    whole stream.

    Raises:
        AsapoError: the client cannot be imported, the token cannot be read, a send is refused
            at once (bad input), messages are not accepted by ASAP::O (listed with stream and
            id, and what to check: endpoint, token, beamtime, data source), or the requests do
            not finish (none finished for ``timeout`` + 2 seconds).
        ValueError: a message without data, or without a data name of ``fields``.
        TypeError: metadata that is not JSON-able, an array of objects.
    """

    inputs: ClassVar[tuple[str, ...] | None] = ("in",)
    outputs: ClassVar[tuple[str, ...]] = ()

    class Params(AsapoParams):
        """See :class:`~beampipe.nodes.asapo.client.AsapoParams` for the connection.

        ``beamline``: for ``create_producer`` (``auto``: from the beamtime). ``source_type``:
        ``processed`` or ``raw``. ``exposed_path``: template of the path the data is exposed
        under, with fields ``source_type``, ``beamtime``, ``data_source``, ``stream``, ``id``,
        ``substream``; it must start with the source type. ``ingest_mode``: flags, ORed.
        ``fields``: the data names to send (``None``: all). ``confirm``: ``stream`` or
        ``message``. ``next_stream``: name the following stream in the finished flag.
        ``stream_metadata``: send stream headers as ASAP::O stream metadata. ``n_threads``:
        the producer's sending threads."""

        beamline: str = "auto"
        source_type: Literal["processed", "raw"] = "processed"
        exposed_path: str = "{source_type}/{data_source}/{stream}/{id}"
        ingest_mode: list[IngestFlag] = Field(
            default_factory=lambda: ["transfer_data", "store_in_filesystem", "store_in_database"],
            min_length=1,
        )
        fields: list[str] | None = Field(None, min_length=1)
        confirm: Literal["stream", "message"] = "stream"
        next_stream: bool = True
        stream_metadata: bool = True
        n_threads: PositiveInt = 1

        @model_validator(mode="after")
        def _path_template(self) -> AsapoSink.Params:
            names = [f for _, f, _, _ in string.Formatter().parse(self.exposed_path) if f]
            unknown = [f for f in names if f not in PATH_FIELDS]
            if unknown:
                raise ValueError(
                    f"exposed_path uses {', '.join(map(repr, unknown))}; its fields are "
                    f"{', '.join(PATH_FIELDS)}"
                )
            example = self.exposed_path.format(
                source_type=self.source_type,
                beamtime=self.beamtime,
                data_source=self.data_source,
                stream="scan",
                id=1,
                substream=1,
            )
            if not example.startswith(f"{self.source_type}/"):
                raise ValueError(
                    f"exposed_path must start with '{self.source_type}/' (the source type)"
                )
            return self

    params: AsapoSink.Params

    def __init__(self, params: AsapoSink.Params, name: str = "") -> None:
        super().__init__(params, name)
        p = params
        self.api = load_client("producer", self.name, LABEL)
        token = read_token(p, self.name, LABEL)
        self.mode = 0
        for flag in p.ingest_mode:
            self.mode |= getattr(self.api, f"INGEST_MODE_{flag.upper()}")
        self.metadata_only = "transfer_metadata_only" in p.ingest_mode
        self.dataset_path = "substream" in {
            f for _, f, _, _ in string.Formatter().parse(p.exposed_path) if f
        }
        try:
            self.producer = self.api.create_producer(
                p.endpoint,
                p.source_type,
                p.beamtime,
                p.beamline,
                p.data_source,
                token,
                p.n_threads,
                int(p.timeout * 1000),
            )
            self.producer.set_log_level("error")
        except self.api.AsapoProducerError as exc:
            raise connection_error(exc, p, self.name, LABEL, "creating the producer") from None
        self._lock = threading.Lock()
        self._failures: list[tuple[str, BaseException]] = []
        """(what, exception) of every request ASAP::O did not accept, not yet reported."""
        self._last: dict[str, int] = {}
        """The highest id sent per open stream."""
        self._unflagged: list[tuple[str, int]] = []
        """Ended streams whose finished flag waits for the next stream: (stream, last id)."""

    # -- callbacks and errors ------------------------------------------------------------------

    def _done(self, what: str, info: dict[str, Any], err: BaseException | None) -> None:
        """The client's callback for one request (called on a client thread)."""
        if err is not None and not isinstance(err, self.api.AsapoServerWarning):
            with self._lock:
                self._failures.append((what, err))

    def _raise_failures(self) -> None:
        with self._lock:
            failures, self._failures = self._failures, []
        if not failures:
            return
        listed = "; ".join(f"{what}: {type(e).__name__}: {e}" for what, e in failures[:MAX_LISTED])
        more = len(failures) - MAX_LISTED
        text = (
            f"{LABEL} {self.name!r}: ASAP::O did not accept {len(failures)} request(s): {listed}"
            + (f"; and {more} more" if more > 0 else "")
        )
        what = hint(failures[0][1], self.params)
        raise AsapoError(f"{text}; {what}" if what else text)

    def _wait(self, doing: str) -> None:
        """Wait until every queued request is done; give up when none finished for
        ``timeout`` + :data:`WAIT_GRACE` seconds (a request fails after ``timeout``, checked by
        the client about once a second)."""
        timeout_ms = int((self.params.timeout + WAIT_GRACE) * 1000)
        while True:
            before = self.producer.get_requests_queue_size()
            try:
                self.producer.wait_requests_finished(timeout_ms)
                return
            except self.api.AsapoTimeOutError:
                left = self.producer.get_requests_queue_size()
                if left >= before:
                    raise AsapoError(
                        f"{LABEL} {self.name!r}: {doing}: {left} request(s) not done, none "
                        f"finished in {timeout_ms / 1000:g} s; check that the endpoint "
                        f"{self.params.endpoint!r} is right and that the ASAP::O services run "
                        "there"
                    ) from None

    # -- streams and messages ------------------------------------------------------------------

    def on_stream_start(self, stream: str, metadata: dict[str, Any]) -> None:
        """Send the stream's header as its ASAP::O stream metadata (``stream_metadata``)."""
        if self.params.stream_metadata and metadata:
            try:
                self.producer.send_stream_meta(
                    _json(metadata, f"stream {stream!r}: the stream metadata"),
                    mode="replace",
                    upsert=True,
                    stream=stream,
                    callback=partial(self._done, f"stream {stream!r}, stream metadata"),
                )
            except self.api.AsapoProducerError as exc:
                raise self._refused(exc, f"sending the metadata of stream {stream!r}") from None

    def process(self, msg: beampipe.Message) -> None:
        """Queue ``msg`` for sending (see the class doc); with ``confirm: message``, wait for
        the outcome and raise if ASAP::O did not accept it."""
        p = self.params
        where = f"stream {msg.stream!r}, message id {msg.id}"
        names = p.fields if p.fields is not None else list(msg.data)
        if not names:
            raise ValueError(f"{LABEL} {self.name!r}: {where}: the message has no data to send")
        missing = [n for n in names if n not in msg.data]
        if missing:
            raise ValueError(
                f"{LABEL} {self.name!r}: {where}: no data named {', '.join(map(repr, missing))} "
                f"(fields); the message has {', '.join(map(repr, msg.data)) or 'none'}"
            )
        self._flag_ended(next_stream=msg.stream)
        n = len(names)
        for k, name in enumerate(names, 1):
            data, meta = encode(msg.data[name], msg.metadata, name)
            substream = k if n > 1 else 0
            path = p.exposed_path.format(
                source_type=p.source_type,
                beamtime=p.beamtime,
                data_source=p.data_source,
                stream=msg.stream,
                id=msg.id,
                substream=substream,
            )
            if substream and not self.dataset_path:
                path += f"_{substream}"
            what = where + (f", substream {k}" if substream else "")
            try:
                self.producer.send(
                    msg.id,
                    path,
                    None if self.metadata_only else data,
                    user_meta=_json(meta, what),
                    dataset=(k, n) if substream else None,
                    ingest_mode=self.mode,
                    stream=msg.stream,
                    callback=partial(self._done, what),
                )
            except self.api.AsapoProducerError as exc:
                raise self._refused(exc, f"sending {what}") from None
        self._last[msg.stream] = max(self._last.get(msg.stream, 0), msg.id)
        if p.confirm == "message":
            self._wait(f"sending {where}")
            self._raise_failures()

    def on_stream_end(self, stream: str) -> None:
        """Wait for the stream's requests, report failures, then send (or keep, with
        ``next_stream``) its finished flag."""
        self._wait(f"at the end of stream {stream!r}")
        self._raise_failures()
        last = self._last.pop(stream, 0)
        if not last:
            return
        if self.params.next_stream:
            self._unflagged.append((stream, last))
        else:
            self._flag(stream, last, None)

    def on_finish(self) -> None:
        """Send the finished flags still kept, wait for everything, report failures."""
        self._flag_ended(next_stream=None)
        self._wait("at the end of the run")
        self._raise_failures()

    def _flag_ended(self, next_stream: str | None) -> None:
        """Send the kept finished flags of ended streams (other than ``next_stream``)."""
        kept = [(s, last) for s, last in self._unflagged if s != next_stream]
        if kept:
            self._unflagged = [(s, last) for s, last in self._unflagged if s == next_stream]
            for stream, last in kept:
                self._flag(stream, last, next_stream)

    def _flag(self, stream: str, last_id: int, next_stream: str | None) -> None:
        try:
            self.producer.send_stream_finished_flag(
                stream,
                last_id,
                next_stream=next_stream,
                callback=partial(self._done, f"stream {stream!r}, finished flag"),
            )
        except self.api.AsapoProducerError as exc:
            raise self._refused(exc, f"finishing stream {stream!r}") from None

    def _refused(self, exc: BaseException, doing: str) -> AsapoError:
        return connection_error(exc, self.params, self.name, LABEL, doing)

    def close(self) -> None:
        """Wait for what is still queued (the client drops it otherwise), then report what
        ASAP::O did not accept."""
        try:
            self._wait("closing")
        finally:
            self.producer.cleanup()
        self._raise_failures()


def _json(meta: dict[str, Any], what: str) -> str:
    try:
        return json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{LABEL}: {what}: the metadata is not JSON-able: {exc}") from None
