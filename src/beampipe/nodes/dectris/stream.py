"""Source for the ZeroMQ stream interface of DECTRIS EIGER / PILATUS4 detectors:
``use: dectris_stream``.

The detector control unit (DCU) pushes every acquisition series over a ZeroMQ PUSH socket
(stream v1 on port 9999, v2 on port 31001) once the stream is enabled in the SIMPLON API
(``stream/api/<version>/config/mode: enabled``; ``format: legacy`` for v1, ``cbor`` for v2).
This source connects a PULL socket to it and turns each series into one beampipe stream.
Decoding is in :mod:`beampipe.nodes.dectris.v1` and :mod:`beampipe.nodes.dectris.v2`.

A PUSH socket deals its messages out round-robin among the PULL sockets connected to it, so
exactly one consumer (this source, or another program) must be connected to a detector's
stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import zmq
from pydantic import Field, PositiveInt, field_validator

import beampipe
from beampipe.message import Item
from beampipe.nodes.dectris import v1, v2
from beampipe.nodes.dectris.messages import (
    HEADER_FIELDS,
    CorruptMessage,
    DectrisStreamError,
    Image,
    SeriesEnd,
    SeriesStart,
    UnsupportedFormat,
)

__all__ = ["DectrisStream", "NoMessage"]

MAX_TIMEOUT = 7 * 86400.0
"""Seconds of ``timeout``: a week (a longer wait is no timeout; null waits for ever)."""


class NoMessage(DectrisStreamError):
    """No message arrived from the detector within ``timeout`` seconds of the start."""


@dataclass
class _Series:
    """The series whose stream is open."""

    series_id: int
    stream: str
    last_id: int = 0
    images: int = 0
    expected: int | None = None


class DectrisStream(beampipe.Source):
    """Receives acquisition series from a DECTRIS detector's stream interface (v1 or v2).

    Streams, one per acquisition series, in the order the detector sends them:

    * :class:`~beampipe.StreamStart` named ``prefix`` + the series id in 6 digits
      (``series-000042``; a series id seen before in this run gets ``-2``, ``-3``, ... since a
      re-initialised detector counts from 1 again). Metadata: the header fields of
      :data:`~beampipe.nodes.dectris.messages.HEADER_FIELDS` (None if not sent),
      ``channels``, ``series_unique_id`` (v2), ``config`` (the whole header as sent),
      ``header_arrays`` (shape and dtype of the flatfield, pixel mask and count-rate table,
      sent with ``header_detail: all``), ``user_data``, ``header_detail`` (v1), and
      ``series_id``, ``stream_version`` (1 or 2), ``endpoint``, ``header_received`` (False if
      the source joined the series after its header: the header fields are then None) and
      ``signal`` (the first channel).
    * One :class:`~beampipe.Message` per image, **id = image number + 1** (DECTRIS numbers
      images from 0, beampipe ids start at 1). ``data``: one 2-D array per channel, shape
      (y, x) = (height, width), the detector's pixel type (uint8/16/32, counts), read-only;
      v1's channel is ``image``, v2's are named by the detector (e.g. ``threshold_1``).
      ``metadata``: ``frame`` (the image number), ``series_id``, ``start_time``,
      ``stop_time``, ``real_time`` (s), ``user_data`` (if sent), ``signal`` and ``units``
      (``counts``) for ``nexus_writer``.
    * :class:`~beampipe.EndOfStream` with ``last_id`` = the highest id sent, when the series
      end message arrives (or a message of a newer series, or the ``timeout`` passes).

    Errors (see docs/nodes.md):

    * A message or frame that cannot be decoded (:class:`CorruptMessage`: bad JSON/CBOR,
      truncated blob, data that do not decompress to the announced size) is skipped through
      :meth:`~beampipe.Worker.dead_letter`: counted in the node's metrics (``dropped``),
      recorded in the pipeline's dead-letter file (one JSON line: node, stream, id, error
      naming series and image and what to check) and named in the warnings at the end of the
      run; the series goes on, so one damaged frame does not cost the rest of the
      acquisition.
    * A format this connector does not read (:class:`UnsupportedFormat`: unknown encoding,
      pixel type, compression, message type, or a stream version other than ``version``)
      affects every image, so it stops the run at once with the series, the image and what
      to check. Images already received have been passed on.
    * :class:`NoMessage`: nothing at all arrived within ``timeout`` seconds (endpoint wrong,
      stream disabled, detector not armed).

    Attributes:
        socket: the PULL socket, connected to ``endpoint`` when the node starts.
    """

    class Params(beampipe.Params):
        """``endpoint``: the detector's stream, ``tcp://HOST:9999`` (v1) or
        ``tcp://HOST:31001`` (v2). ``version``: ``1``, ``2`` or ``auto`` (decided per
        message: v1 messages start with a JSON part, v2 with CBOR). ``series``: number of
        series to receive before the source finishes (null: until stopped or ``timeout``).
        ``timeout``: seconds without a message after which the source finishes, ending an
        open series with what arrived (null: wait for ever; at most a week); if nothing
        arrived at all it is an error. ``prefix``: stream names are ``prefix`` + 6-digit series
        id."""

        endpoint: str
        version: Literal[1, 2, "auto"] = "auto"
        series: PositiveInt | None = None
        timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)] | None = None
        prefix: str = "series-"

        @field_validator("endpoint")
        @classmethod
        def _zmq_endpoint(cls, value: str) -> str:
            transport, sep, address = value.partition("://")
            if not sep or transport not in ("tcp", "ipc") or not address:
                raise ValueError(
                    f"endpoint {value!r} is not a ZeroMQ address like tcp://eiger:9999 "
                    "(stream v1) or tcp://eiger:31001 (stream v2)"
                )
            if transport == "tcp" and not address.rpartition(":")[2].isdigit():
                raise ValueError(f"endpoint {value!r} has no port (v1: 9999, v2: 31001)")
            return value

    params: DectrisStream.Params

    def __init__(self, params: DectrisStream.Params, name: str = "") -> None:
        super().__init__(params, name)
        self._received = 0
        self._done = 0
        self._open: _Series | None = None
        self._names: dict[str, int] = {}
        self._context = zmq.Context()
        self.socket = self._context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            self.socket.connect(params.endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ValueError(
                f"{self.name}: cannot connect to {params.endpoint!r}: {exc}; check the host name"
            ) from None

    @property
    def _label(self) -> str:
        return f"dectris_stream {self.params.endpoint}"

    def close(self) -> None:
        """Close the socket (messages not yet received stay with the detector or are lost
        with the connection)."""
        if not self._context.closed:
            self.socket.close(linger=0)
            self._context.term()

    # -- receiving -----------------------------------------------------------------------------

    def _receive(self) -> list[zmq.Frame] | None:
        """The next multipart message, or None when ``timeout`` passed without one."""
        timeout = None if self.params.timeout is None else int(self.params.timeout * 1000)
        if not self.socket.poll(timeout):
            return None
        self._received += 1
        return self.socket.recv_multipart(copy=False)

    def _decode(self, frames: list[zmq.Frame]) -> tuple[int, SeriesStart | Image | SeriesEnd]:
        """``(stream version, decoded message)``; v1 messages start with a JSON object."""
        parts = [f.buffer for f in frames]
        version = 1 if bytes(parts[0][:1]) == b"{" else 2
        if self.params.version not in ("auto", version):
            raise UnsupportedFormat(
                f"a stream v{version} message arrived, but the source expects v"
                f"{self.params.version}",
                "the version param and the detector's stream/api/.../config/format "
                "(legacy = v1, cbor = v2)",
            )
        if version == 1:
            return 1, v1.decode(parts)
        if len(parts) != 1:
            raise CorruptMessage(f"a stream v2 message has {len(parts)} parts, not 1")
        return 2, v2.decode(parts[0])

    # -- streams -------------------------------------------------------------------------------

    def _stream_name(self, series_id: int) -> str:
        name = f"{self.params.prefix}{series_id:06d}"
        seen = self._names.get(name, 0)
        self._names[name] = seen + 1
        return name if not seen else f"{name}-{seen + 1}"

    def _start(
        self, series_id: int, metadata: dict[str, Any], version: int, header: bool
    ) -> beampipe.StreamStart:
        """Open the stream of a new series."""
        series = self._open = _Series(series_id, self._stream_name(series_id))
        series.expected = metadata.get("number_of_images")
        channels = metadata.get("channels") or []
        meta = {
            **metadata,
            "series_id": series_id,
            "stream_version": version,
            "endpoint": self.params.endpoint,
            "header_received": header,
            "signal": channels[0] if channels else None,
        }
        return beampipe.StreamStart(series.stream, meta)

    @staticmethod
    def _headerless(image: Image) -> dict[str, Any]:
        """Stream metadata for a series whose header this source did not receive."""
        return {
            **dict.fromkeys(HEADER_FIELDS),
            "channels": list(image.data),
            "series_unique_id": None,
            "config": {},
            "header_arrays": {},
            "user_data": None,
        }

    def generate(self) -> Iterator[Item]:
        """StreamStart, Messages and EndOfStream for each series in turn (see the class doc).

        Raises:
            UnsupportedFormat: a message in a format not read here (names series, image and
                what to check).
            NoMessage: nothing arrived within ``timeout`` s of the start.
        """
        p = self.params
        while p.series is None or self._done < p.series:
            frames = self._receive()
            if frames is None:
                if not self._received:
                    raise NoMessage(
                        f"no message within {p.timeout:g} s",
                        "the endpoint (host and port: 9999 for stream v1, 31001 for v2), that "
                        "the stream is enabled (stream/api/.../config/mode: enabled) and the "
                        "detector armed and triggered",
                    ).at(None, None, self._label)
                if self._open is not None:
                    self._record_incomplete(self._open)
                    yield self._end()
                break
            try:
                version, item = self._decode(frames)
            except UnsupportedFormat as exc:
                raise exc.at(None, None, self._label) from None
            except CorruptMessage as exc:
                self._skip(exc, frames)
                continue
            if isinstance(item, SeriesEnd):
                if self._open is not None:
                    yield self._end()
                continue
            if self._open is not None and (
                isinstance(item, SeriesStart) or self._open.series_id != item.series_id
            ):  # a new series although the last one did not end
                yield self._end()
                if p.series is not None and self._done >= p.series:
                    break
            if isinstance(item, SeriesStart):
                yield self._start(item.series_id, item.metadata, version, header=True)
                continue
            if self._open is None:
                yield self._start(item.series_id, self._headerless(item), version, header=False)
            message = self._message(item, frames)
            if message is not None:
                yield message

    def _message(self, image: Image, frames: list[zmq.Frame]) -> beampipe.Message | None:
        """The message of an image of the open series (None if its id was already sent)."""
        series = self._open
        assert series is not None
        msg_id = image.image_number + 1
        if msg_id <= series.last_id:
            problem = (
                f"image number {image.image_number} arrived after image {series.last_id - 1} "
                "(a repeat, or out of order)"
            )
            hint = "that only one consumer is connected to the detector's stream"
            exc = CorruptMessage(problem, hint, image.series_id, image.image_number)
            self._skip(exc, frames)
            return None
        series.last_id = msg_id
        series.images += 1
        channels = list(image.data)
        metadata = {"frame": image.image_number, "series_id": image.series_id, **image.metadata}
        metadata.update(signal=channels[0], units=dict.fromkeys(channels, "counts"))
        return beampipe.Message(
            data=dict(image.data), metadata=metadata, stream=series.stream, id=msg_id
        )

    def _end(self) -> beampipe.EndOfStream:
        """End the open series."""
        series, self._open = self._open, None
        assert series is not None
        self._done += 1
        return beampipe.EndOfStream(series.stream, series.last_id)

    # -- errors --------------------------------------------------------------------------------

    def _skip(self, exc: DectrisStreamError, frames: list[zmq.Frame]) -> None:
        """Drop a message that cannot be decoded, through :meth:`~beampipe.Worker.dead_letter`."""
        exc.at(None, None, self._label)
        stream = self._open.stream if self._open is not None else ""
        msg_id = exc.image_number + 1 if exc.image_number is not None else 0
        size = sum(len(f.buffer) for f in frames)
        self._record(stream, msg_id, exc, {"series_id": exc.series_id, "bytes": size})

    def _record_incomplete(self, series: _Series) -> None:
        exc = DectrisStreamError(
            f"no message for {self.params.timeout:g} s; the series ended after "
            f"{series.images} of {series.expected if series.expected is not None else '?'} "
            "images",
            "the detector (disarmed without an end message?) and the network",
            series.series_id,
        ).at(None, None, self._label)
        self._record(series.stream, 0, exc, {"series_id": series.series_id})

    def _record(
        self, stream: str, msg_id: int, exc: DectrisStreamError, metadata: dict[str, Any]
    ) -> None:
        self.dead_letter(beampipe.Message(stream=stream, id=msg_id, metadata=metadata), exc)
