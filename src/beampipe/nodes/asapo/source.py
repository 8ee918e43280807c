"""ASAP::O source: ``use: asapo_source`` (extra ``asapo``).

Reads a data source of a beamtime from DESY's ASAP::O streaming platform with the official
client ``asapo_consumer`` (https://asapo.pages.desy.de/asapo/): one beampipe stream per ASAP::O
stream, one message per ASAP::O message (or dataset), ids as in ASAP::O. Replicas of the node
share the stream through one consumer group. The connection, token and client module are
described in :mod:`beampipe.nodes.asapo.client`, the data convention in
:mod:`beampipe.nodes.asapo.payload`.

beampipe's tests run this source against a FAKE of the documented client API and a fake broker
process (``tests/fakes/asapo_fake``), because no ASAP::O service stack can run there; they do
not show that it works against the real service.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field, NonNegativeInt

import beampipe
from beampipe.message import Item
from beampipe.nodes.asapo.client import (
    AsapoError,
    AsapoParams,
    connection_error,
    load_client,
    read_token,
)
from beampipe.nodes.asapo.payload import PayloadError, decode

__all__ = ["AsapoSource"]

LABEL = "asapo_source"

Seconds = float


class AsapoSource(beampipe.Source):
    """Messages of one ASAP::O data source, stream after stream.

    Streams: the first is ``stream`` (or, if not given, the oldest stream of the data source).
    Each is read with ``get_next`` (``get_next_dataset`` with ``dataset: true``) in the
    consumer group ``group_id`` until ASAP::O says it is finished
    (``AsapoStreamFinishedError``); then the source continues with the stream that the finished
    one names as its next stream. With ``follow: stream_list``, a finished stream that names no
    next stream is followed by the next stream in the data source's stream list (creation
    order) that this source has not read, waiting for one up to ``idle_timeout``. The source
    ends after the last stream.

    Output per ASAP::O stream:

    * :class:`~beampipe.StreamStart` named as the ASAP::O stream, metadata = the stream's
      ASAP::O metadata (``get_stream_meta``; none: ``{}``) plus ``"asapo": {"beamtime",
      "data_source", "stream"}``.
    * One :class:`~beampipe.Message` per ASAP::O message, with the ASAP::O message id as id.
      ``metadata`` = the message's user ``meta`` plus ``"asapo": {"name", "timestamp"}`` (the
      exposed path, and the ingest time in ns since the epoch). ``data`` = ``{name: value}``:
      value decoded by :func:`~beampipe.nodes.asapo.payload.decode` (a read-only numpy
      array of ``meta["shape"]`` and ``meta["dtype"]``, or ``bytes``), name = ``meta["data_name"]``
      or the ``data_name`` param.
    * With ``dataset: true``, one message per dataset id: one entry per substream (named
      ``meta["data_name"]`` or ``f"{data_name}_{k}"``, k = substream number from 1), metadata =
      the user meta of the lowest substream plus ``"dataset": {"expected_size", "received",
      "missing", "partial", "substreams": {k: meta}}``. A partial dataset (fewer substreams
      than ``min_size``, or than all with ``min_size: 0``) is passed on with the substreams
      present, flagged ``partial: true``, counted in :attr:`partial_datasets` and logged;
      ``partial: fail`` stops the run instead.
    * :class:`~beampipe.EndOfStream` with ``last_id`` = the stream's last id from the finished
      flag and ``next_stream`` as ASAP::O names it (``None`` for none).

    Acknowledgements: a message is acknowledged in ASAP::O (``acknowledge``) once it has been
    handed on downstream, i.e. when the runtime asks for the next item. Resending is switched on
    (``set_resend_nacs(True, resend_delay, resend_attempts)``), so a message delivered to a
    replica that dies before acknowledging it is delivered again to the group. A message that
    was received but not handed on when the node stops, or whose data cannot be decoded, is
    negatively acknowledged (``neg_acknowledge``, delay 0 or ``resend_delay``): nothing received
    is lost. A worker failure further down is not seen here: under ``on_error: skip`` the
    dead-letter file names the ASAP::O stream and message id (re-read with ``get_by_id``).

    Class attributes: ``shared_group = True``: the node may run as several replicas, which
    share the stream through the consumer group (each message to one replica).

    Raises (the run stops; the message names the node, stream and id and what to check):
        AsapoError: the client cannot be imported; the token cannot be read; the services
            cannot be reached (endpoint); the token, beamtime or data source are refused; the
            data source does not appear within ``start_timeout``; a message's data does not
            fit its ``dtype``/``shape`` meta (it is negatively acknowledged first); a partial
            dataset with ``partial: fail``; ``group_id`` missing on a replica other than 0.
    """

    shared_group: ClassVar[bool] = True

    class Params(AsapoParams):
        """See :class:`~beampipe.nodes.asapo.client.AsapoParams` for the connection.

        ``group_id``: the consumer group (ASAP::O keeps where a group has got to: the same id
        resumes, a new one reads from the start); ``None``: a new group for this run (one
        replica only). ``stream``: the first stream (``None``: the oldest). ``follow``:
        ``next_stream`` or ``stream_list`` (see the class doc). ``idle_timeout``: seconds to
        wait for a new stream with ``follow: stream_list`` (``None``: forever).
        ``start_timeout``: seconds to wait at start for the data source (and, without
        ``stream``, its first stream) to appear (``None``: forever). ``dataset``: read datasets
        (``get_next_dataset``); ``min_size``: substreams that make a dataset complete (0: all);
        ``partial``: ``deliver`` or ``fail``. ``data_name``: the name of the data entry.
        ``resend_delay``: seconds after which an unacknowledged (or negatively acknowledged)
        message is delivered again; ``resend_attempts``: how often (0: no limit).
        ``source_path``, ``has_filesystem``: where the consumer reads data files
        (``create_consumer``)."""

        group_id: str | None = Field(None, min_length=1)
        stream: str | None = Field(None, min_length=1)
        follow: Literal["next_stream", "stream_list"] = "next_stream"
        idle_timeout: Seconds | None = Field(None, gt=0, allow_inf_nan=False)
        start_timeout: Seconds | None = Field(30.0, ge=0, allow_inf_nan=False)
        dataset: bool = False
        min_size: NonNegativeInt = 0
        partial: Literal["deliver", "fail"] = "deliver"
        data_name: str = Field("data", min_length=1)
        resend_delay: Seconds = Field(10.0, gt=0, allow_inf_nan=False)
        resend_attempts: NonNegativeInt = 3
        source_path: str = "auto"
        has_filesystem: bool = False

    params: AsapoSource.Params

    def __init__(self, params: AsapoSource.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.api: Any = None
        self.consumer: Any = None
        self.group_id = ""
        self.partial_datasets: dict[str, list[int]] = {}
        """Per stream, the ids of the partial datasets passed on."""
        self._pending: tuple[str, int] | None = None
        """(stream, id) yielded and not yet acknowledged."""

    # -- connection ----------------------------------------------------------------------------

    def _fail(self, exc: BaseException, doing: str) -> AsapoError:
        return connection_error(exc, self.params, self.name, LABEL, doing)

    def _connect(self) -> None:
        p = self.params
        self.api = load_client("consumer", self.name, LABEL)
        token = read_token(p, self.name, LABEL)
        try:
            self.consumer = self.api.create_consumer(
                p.endpoint,
                p.source_path,
                p.has_filesystem,
                p.beamtime,
                p.data_source,
                token,
                int(p.timeout * 1000),
            )
            self.consumer.set_resend_nacs(True, int(p.resend_delay * 1000), p.resend_attempts)
        except self.api.AsapoConsumerError as exc:
            raise self._fail(exc, "creating the consumer") from None
        if p.group_id is None and self.replica:
            raise AsapoError(
                f"{LABEL} {self.name!r}: set group_id when the node runs as several replicas, "
                "so that they share one consumer group"
            )
        self.group_id = p.group_id or self._call("creating a consumer group", "generate_group_id")

    def _call(self, doing: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``consumer.method(*args, **kwargs)``; a client error becomes an :class:`AsapoError`."""
        try:
            return getattr(self.consumer, method)(*args, **kwargs)
        except self.api.AsapoConsumerError as exc:
            raise self._fail(exc, doing) from None

    def _wait_for_data_source(self) -> None:
        p = self.params
        deadline = None if p.start_timeout is None else time.monotonic() + p.start_timeout
        while True:
            known = self._call("listing the data sources", "get_source_list")
            if p.data_source in known:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise AsapoError(
                    f"{LABEL} {self.name!r}: beamtime {p.beamtime!r} has no data source "
                    f"{p.data_source!r} (after waiting {p.start_timeout:g} s, start_timeout); "
                    f"its data sources: {', '.join(map(repr, sorted(known))) or 'none'}"
                )
            time.sleep(min(p.timeout, 0.5))

    def _await_stream(self, start: str, read: set[str], timeout: Seconds | None) -> str | None:
        """The first stream from ``start`` on (``""``: from the oldest) in the data source's
        stream list that is not in ``read``, waiting up to ``timeout`` seconds (``None``:
        forever); ``None`` if none appeared."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            infos = self._call(
                "listing the streams", "get_stream_list", from_stream=start, detailed=False
            )
            for info in infos:
                if info["name"] not in read:
                    return info["name"]
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(min(self.params.timeout, 0.5))

    # -- reading -------------------------------------------------------------------------------

    def generate(self) -> Iterator[Item]:
        """StreamStart, Messages and EndOfStream per ASAP::O stream (see the class doc)."""
        p = self.params
        self._connect()
        self._wait_for_data_source()
        stream = p.stream or self._await_stream("", set(), p.start_timeout)
        if stream is None:
            raise AsapoError(
                f"{LABEL} {self.name!r}: data source {p.data_source!r} has no stream (after "
                f"waiting {p.start_timeout:g} s, start_timeout)"
            )
        read: set[str] = set()
        while stream is not None:
            read.add(stream)
            end = yield from self._read(stream)
            yield end
            if end.next_stream is None and p.follow == "stream_list":
                stream = self._await_stream(stream, read, p.idle_timeout)
            else:
                stream = end.next_stream

    def _read(self, stream: str) -> Iterator[Item]:
        """The items of one stream; returns its EndOfStream (not yielded)."""
        yield beampipe.StreamStart(stream, self._stream_metadata(stream))
        while True:
            try:
                msg = self._next(stream)
            except self.api.AsapoStreamFinishedError as exc:
                next_stream = exc.next_stream or None
                return beampipe.EndOfStream(stream, int(exc.id_max or 0), next_stream)
            if msg is None:
                continue
            self._pending = (stream, msg.id)
            yield msg
            self._acknowledge()

    def _stream_metadata(self, stream: str) -> dict[str, Any]:
        try:
            meta = dict(self.consumer.get_stream_meta(stream))
        except self.api.AsapoNoDataError:
            meta = {}
        except self.api.AsapoConsumerError as exc:
            raise self._fail(exc, f"reading the metadata of stream {stream!r}") from None
        p = self.params
        meta["asapo"] = {"beamtime": p.beamtime, "data_source": p.data_source, "stream": stream}
        return meta

    def _next(self, stream: str) -> beampipe.Message | None:
        """The next message of ``stream`` for the group, or None when there is none yet.

        Raises:
            AsapoStreamFinishedError: (of the client) the stream is finished.
        """
        api, p = self.api, self.params
        try:
            if p.dataset:
                dataset = self.consumer.get_next_dataset(
                    self.group_id, min_size=p.min_size, stream=stream, ordered=False
                )
            else:
                data, meta = self.consumer.get_next(
                    self.group_id, meta_only=False, stream=stream, ordered=False
                )
        except (
            api.AsapoEndOfStreamError,
            api.AsapoNoDataError,
            api.AsapoInterruptedTransactionError,
        ):
            return None  # nothing new yet, or a transaction to try again
        except api.AsapoPartialDataError as exc:
            return self._dataset(stream, exc.partial_data, partial=True)
        except api.AsapoStreamFinishedError:
            raise
        except api.AsapoConsumerError as exc:
            raise self._fail(exc, f"reading stream {stream!r}") from None
        if p.dataset:
            return self._dataset(stream, dataset, partial=False)
        user = meta.get("meta") or {}
        value = self._decode(stream, meta["_id"], data, user)
        name = user.get("data_name", p.data_name)
        metadata = {**user, "asapo": {"name": meta["name"], "timestamp": meta["timestamp"]}}
        msg_id = int(meta["_id"])
        return beampipe.Message(data={name: value}, metadata=metadata, stream=stream, id=msg_id)

    def _decode(
        self, stream: str, msg_id: int, blob: Any, meta: dict[str, Any], part: str = ""
    ) -> Any:
        try:
            return decode(blob, meta)
        except PayloadError as exc:
            self._neg_acknowledge(stream, msg_id, self.params.resend_delay)
            raise AsapoError(
                f"{LABEL} {self.name!r}: stream {stream!r}, message id {msg_id}{part}: {exc} "
                "(check the producer's 'dtype'/'shape' meta; the message was negatively "
                "acknowledged and stays in ASAP::O)"
            ) from None

    def _dataset(self, stream: str, dataset: dict[str, Any], partial: bool) -> beampipe.Message:
        p = self.params
        msg_id, size = int(dataset["id"]), int(dataset["expected_size"])
        parts = sorted(dataset["content"], key=lambda m: m["dataset_substream"])
        received = [int(m["dataset_substream"]) for m in parts]
        missing = [k for k in range(1, size + 1) if k not in received]
        where = f"stream {stream!r}, message id {msg_id}"
        if partial and p.partial == "fail":
            self._neg_acknowledge(stream, msg_id, p.resend_delay)
            raise AsapoError(
                f"{LABEL} {self.name!r}: {where}: partial dataset, substreams {received} of "
                f"{size} (missing {missing}; partial: fail). It was negatively acknowledged "
                "and stays in ASAP::O"
            )
        data: dict[str, Any] = {}
        metas: dict[str, Any] = {}
        for meta in parts:
            k = int(meta["dataset_substream"])
            user = meta.get("meta") or {}
            try:
                blob = self.consumer.retrieve_data(meta)
            except self.api.AsapoConsumerError as exc:
                self._neg_acknowledge(stream, msg_id, p.resend_delay)
                raise self._fail(exc, f"{where}: retrieving substream {k}") from None
            name = user.get("data_name", f"{p.data_name}_{k}")
            if name in data:
                self._neg_acknowledge(stream, msg_id, p.resend_delay)
                raise AsapoError(
                    f"{LABEL} {self.name!r}: {where}: two substreams are named {name!r} "
                    "(check the producer's 'data_name' meta)"
                )
            data[name] = self._decode(stream, msg_id, blob, user, f", substream {k}")
            metas[str(k)] = user
        first = (parts[0].get("meta") or {}) if parts else {}
        metadata = {
            **first,
            "dataset": {
                "expected_size": size,
                "received": received,
                "missing": missing,
                "partial": partial,
                "substreams": metas,
            },
        }
        if partial:
            self.partial_datasets.setdefault(stream, []).append(msg_id)
            print(
                f"{LABEL} {self.name!r}: {where}: partial dataset passed on, substreams "
                f"{received} of {size} (missing {missing})",
                file=sys.stderr,
                flush=True,
            )
        return beampipe.Message(data=data, metadata=metadata, stream=stream, id=msg_id)

    # -- acknowledgements ----------------------------------------------------------------------

    def _acknowledge(self) -> None:
        """The pending message was handed on: acknowledge it in ASAP::O."""
        assert self._pending is not None
        stream, msg_id = self._pending
        self._call(
            f"acknowledging stream {stream!r}, message id {msg_id}",
            "acknowledge",
            self.group_id,
            msg_id,
            stream=stream,
        )
        self._pending = None

    def _neg_acknowledge(self, stream: str, msg_id: int, delay: Seconds) -> None:
        self._call(
            f"negatively acknowledging stream {stream!r}, message id {msg_id}",
            "neg_acknowledge",
            self.group_id,
            msg_id,
            delay_ms=int(delay * 1000),
            stream=stream,
        )

    def close(self) -> None:
        """A message yielded but not handed on (the node is stopping) is negatively
        acknowledged with no delay, so that the group gets it again."""
        if self._pending is not None and self.consumer is not None:
            stream, msg_id = self._pending
            self._pending = None
            self._neg_acknowledge(stream, msg_id, 0.0)
