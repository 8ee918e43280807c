"""Monitors of EPICS process variables (PVs) as a stream: ``use: epics_source``.

The source subscribes to a list of PVs over Channel Access (caproto's threading client) and
turns their monitor updates into messages: one per update (``mode: each``) or, for every update
of a trigger PV, one holding the latest value of every PV (``mode: snapshot``), e.g. ring current,
I0 counter and motor position at each I0 reading. Channel Access: https://docs.epics-controls.org/
en/latest/internal/ca_protocol.html; caproto: https://caproto.github.io/caproto/.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

import beampipe
from beampipe.message import Item
from beampipe.nodes.epics.ca import ChannelAccess

__all__ = ["EpicsSource", "pv_key"]

log = logging.getLogger(__name__)

_NOT_KEY = re.compile(r"[^A-Za-z0-9_]")

WAKE_INTERVAL = 0.5
"""Seconds between idle ticks (``None`` yielded to the runtime) while no update arrives."""
_IDLE = object()


def pv_key(name: str) -> str:
    """The data key of a PV listed by name only: every character other than a letter, a digit
    or ``_`` becomes ``_`` (``BL:RingCurrent`` -> ``BL_RingCurrent``)."""
    return _NOT_KEY.sub("_", name)


@dataclass(frozen=True, slots=True)
class _Update:
    """One monitor update of one PV, converted."""

    pv: str
    value: np.ndarray | bytes
    timestamp: float
    severity: int
    status: int

    def describe(self) -> dict[str, Any]:
        return {
            "pv": self.pv,
            "timestamp": self.timestamp,
            "severity": self.severity,
            "status": self.status,
        }


class EpicsSource(beampipe.Source):
    """Monitors EPICS PVs: one stream, one message per monitor update or per trigger update.

    When :meth:`generate` starts, every PV is connected (all at once, within ``timeout``), its
    units and enum strings are read once (``DBR_CTRL``), and a monitor is subscribed
    (``DBR_TIME``: value, alarm status and severity, timestamp) for value and alarm changes.
    A monitor delivers the PV's current value first, then every change.

    Stream (name ``stream``, default the node's name):

    * :class:`~beampipe.StreamStart`, metadata ``{"pvs": {key: PV name}, "mode": mode,
      "trigger": PV name or None, "units": {key: unit}, "enum_strings": {key: [str]}}``
      (``units`` only for PVs that have units, ``enum_strings`` only for enum PVs).
    * :class:`~beampipe.Message` s with ids 1, 2, 3, ...:

      - ``mode: each``: one per update of any PV. ``data = {key: value}``; ``metadata =
        {"pv": name, "timestamp": t, "severity": s, "status": a, "units": {key: unit}}``.
      - ``mode: snapshot``: one per update of the ``trigger`` PV, once every PV has had a value.
        ``data`` holds the latest value of every PV; the top-level metadata describe the
        trigger's update, ``metadata["pvs"] = {key: {"pv", "timestamp", "severity",
        "status"}}`` each PV's latest one.

      Values: a PV of one element gives a 0-d array, a waveform a 1-D array of its current
      elements, in the PV's own type (``DOUBLE`` float64, ``FLOAT`` float32, ``LONG`` int32,
      ``SHORT`` int16, ``ENUM`` uint16 index, ``CHAR`` uint8), native byte order, read-only; a
      string PV gives ``bytes`` (one element) or a 1-D ``S40`` array. ``timestamp``: the
      IOC's time stamp of the value, POSIX seconds (float). ``severity``: EPICS alarm
      severity, 0 NO_ALARM, 1 MINOR, 2 MAJOR, 3 INVALID. ``status``: EPICS alarm status
      (0 NO_ALARM, 1 READ, 2 WRITE, 3 HIHI, 4 HIGH, 5 LOLO, 6 LOW, 7 STATE, ..., 17 UDF).

    * :class:`~beampipe.EndOfStream` after ``messages`` messages or ``duration`` seconds
      (counted from the StreamStart), whichever comes first. Without either the stream runs
      until the pipeline is drained or stopped (it yields to the runtime every 0.5 s while
      waiting, so Ctrl-C ends its stream at once).

    Updates are queued in memory in arrival order while the pipeline is busy, none dropped
    here (an IOC whose client does not keep up may merge updates in its own monitor queue).
    Updates of PVs served by one IOC arrive in the order the IOC posted them. A PV that
    disconnects is logged; when it reconnects its monitor resumes and delivers its current
    value again.

    Raises (from :meth:`generate`):
        PVConnectionError: PVs that did not connect within ``timeout``; the message names them
            and the ``EPICS_CA_*`` environment to check.
        TimeoutError: the units of a connected PV could not be read within ``timeout``.
        ImportError: caproto is not installed.
    """

    class Params(beampipe.Params):
        """``pvs``: PV names (their keys in the data are :func:`pv_key` of the name), or
        ``{key: PV name}``. ``mode``: ``each`` or ``snapshot``. ``trigger``: the PV (key or
        name) whose updates make the messages in ``snapshot`` mode (required there, not
        allowed in ``each`` mode). ``stream``: the stream name (default the node's name).
        ``messages``: end the stream after this many messages. ``duration``: end it after
        this many seconds. ``initial``: whether the value each monitor delivers first (the
        value when the subscription starts, as camonitor shows it) makes a message; in
        ``snapshot`` mode this concerns the trigger only, the others' first values always
        count as their latest. ``timeout``: seconds to wait for the PVs to connect."""

        pvs: dict[str, str]
        mode: Literal["each", "snapshot"] = "each"
        trigger: str | None = None
        stream: str | None = Field(default=None, min_length=1)
        messages: PositiveInt | None = None
        duration: PositiveFloat | None = None
        initial: bool = True
        timeout: PositiveFloat = 5.0

        @field_validator("pvs", mode="before")
        @classmethod
        def _names_to_keys(cls, value: Any) -> Any:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list | tuple):
                return value
            keys: dict[str, str] = {}
            for name in value:
                if not isinstance(name, str):
                    raise ValueError(f"{name!r} is not a PV name (a string)")
                key = pv_key(name)
                if key in keys:
                    if keys[key] == name:
                        raise ValueError(f"PV {name!r} is listed twice")
                    raise ValueError(
                        f"PVs {keys[key]!r} and {name!r} would both have the data key "
                        f"{key!r}: name the keys, as in pvs: {{key: PV name}}"
                    )
                keys[key] = name
            return keys

        @model_validator(mode="after")
        def _check(self) -> EpicsSource.Params:
            if not self.pvs:
                raise ValueError("pvs is empty: name at least one PV")
            for key, name in self.pvs.items():
                if not key or not name:
                    raise ValueError(f"pvs: empty key or PV name in {key!r}: {name!r}")
            names = list(self.pvs.values())
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"pvs: PV {twice[0]!r} is listed twice")
            if self.duration is not None and not math.isfinite(self.duration):
                raise ValueError("duration must be a finite number of seconds")
            if self.mode == "snapshot" and self.trigger is None:
                raise ValueError(
                    "mode 'snapshot' needs a trigger: the PV whose updates make messages"
                )
            if self.mode == "each" and self.trigger is not None:
                raise ValueError("trigger is used only with mode: snapshot")
            if self.trigger is not None and self.trigger_key is None:
                raise ValueError(
                    f"trigger {self.trigger!r} is not one of the pvs "
                    f"(keys: {', '.join(self.pvs)}; PV names: {', '.join(names)})"
                )
            return self

        @property
        def trigger_key(self) -> str | None:
            """The key of the trigger PV (``trigger`` given as key or as PV name)."""
            if self.trigger in self.pvs:
                return self.trigger
            for key, name in self.pvs.items():
                if name == self.trigger:
                    return key
            return None

    params: EpicsSource.Params

    def __init__(self, params: EpicsSource.Params, name: str = "") -> None:
        super().__init__(params, name)
        self._queue: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
        self._live: set[str] = set()
        """PVs whose monitor delivered its first value."""
        self._live_lock = threading.Lock()
        self._all_live = threading.Event()
        self._ca: ChannelAccess | None = None
        self._subscriptions: list[Any] = []
        self._down: set[str] = set()
        self._closing = False

    # -- caproto callbacks (on caproto's threads) ---------------------------------------------

    def _on_update(self, subscription: Any, response: Any) -> None:
        self._queue.put((subscription.pv.name, response.data, response.metadata))
        with self._live_lock:
            self._live.add(subscription.pv.name)
            if len(self._live) == len(self._subscriptions):
                self._all_live.set()

    def _on_connection(self, pv: Any, state: str) -> None:
        if self._closing:
            return
        if state == "disconnected":
            self._down.add(pv.name)
            log.warning(
                "%s: PV %r disconnected; its monitor resumes when it reconnects", self.name, pv.name
            )
        elif state == "connected" and pv.name in self._down:
            self._down.discard(pv.name)
            log.warning("%s: PV %r reconnected", self.name, pv.name)

    # -- the stream ----------------------------------------------------------------------------

    def generate(self) -> Iterator[Item]:
        """StreamStart, Messages and EndOfStream (see the class doc)."""
        p = self.params
        self._ca = ChannelAccess(self.name, p.timeout)
        keys = {name: key for key, name in p.pvs.items()}
        pvs = self._ca.connect(list(p.pvs.values()), connection_state_callback=self._on_connection)
        units: dict[str, str] = {}
        enums: dict[str, list[str]] = {}
        scalar: dict[str, bool] = {}
        for pv in pvs:
            key = keys[pv.name]
            scalar[key] = pv.channel.native_data_count == 1
            ctrl = self._read_control(pv)
            if getattr(ctrl, "units", b""):
                units[key] = _text(ctrl.units)
            if getattr(ctrl, "enum_strings", None):
                enums[key] = [_text(s) for s in ctrl.enum_strings]
        for pv in pvs:
            subscription = pv.subscribe(data_type="time")
            self._subscriptions.append(subscription)
        for subscription in self._subscriptions:
            subscription.add_callback(self._on_update)
        # The stream starts once every monitor delivered its first value, so that no later
        # change can be taken for a PV's initial value.
        if not self._all_live.wait(p.timeout):
            missing = sorted(set(keys) - self._live)
            raise TimeoutError(
                f"{self.name}: no first value from the monitors of {missing} within {p.timeout:g} s"
            )

        stream = p.stream or self.name
        trigger = p.trigger_key
        header: dict[str, Any] = {
            "pvs": dict(p.pvs),
            "mode": p.mode,
            "trigger": p.pvs[trigger] if trigger else None,
            "units": units,
        }
        if enums:
            header["enum_strings"] = enums
        yield beampipe.StreamStart(stream=stream, metadata=header)

        deadline = time.monotonic() + p.duration if p.duration is not None else None
        seen: set[str] = set()
        latest: dict[str, _Update] = {}
        pending = False
        n = 0
        while p.messages is None or n < p.messages:
            got = self._next(deadline)
            if got is _IDLE:
                yield None  # no update yet: the runtime may drain or stop us meanwhile
                continue
            if got is None:
                break
            name, data, meta = got
            key = keys[name]
            first = name not in seen
            seen.add(name)
            update = _Update(
                pv=name,
                value=_value(data, scalar[key]),
                timestamp=float(meta.timestamp),
                severity=int(meta.severity),
                status=int(meta.status),
            )
            latest[key] = update
            if p.mode == "each":
                if first and not p.initial:
                    continue
                n += 1
                meta_out = {**update.describe(), **_units(units, [key])}
                yield beampipe.Message(
                    data={key: update.value}, metadata=meta_out, stream=stream, id=n
                )
                continue
            if key == trigger and (p.initial or not first):
                pending = True
            if pending and len(latest) == len(p.pvs):
                pending = False
                n += 1
                assert trigger is not None
                yield self._snapshot(stream, n, latest, latest[trigger], units)
        yield beampipe.EndOfStream(stream=stream, last_id=n)

    def _read_control(self, pv: Any) -> Any:
        from caproto import CaprotoTimeoutError

        try:
            return pv.read(data_type="control", timeout=self.params.timeout).metadata
        except CaprotoTimeoutError as exc:
            raise TimeoutError(
                f"{self.name}: PV {pv.name!r} connected but reading its units and limits "
                f"(DBR_CTRL) did not complete within {self.params.timeout:g} s: {exc}"
            ) from exc

    def _next(self, deadline: float | None) -> tuple[str, Any, Any] | object | None:
        """The next update; :data:`_IDLE` after :data:`WAKE_INTERVAL` without one; None when
        ``deadline`` has passed."""
        while True:
            wait = WAKE_INTERVAL
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = min(wait, left)
            try:
                return self._queue.get(timeout=wait)
            except queue.Empty:
                return _IDLE

    @staticmethod
    def _snapshot(
        stream: str, n: int, latest: dict[str, _Update], trigger: _Update, units: dict[str, str]
    ) -> beampipe.Message:
        metadata = {
            **trigger.describe(),
            "pvs": {key: u.describe() for key, u in latest.items()},
            **_units(units, list(latest)),
        }
        data = {key: u.value for key, u in latest.items()}
        return beampipe.Message(data=data, metadata=metadata, stream=stream, id=n)

    def close(self) -> None:
        """Clear the monitors and disconnect."""
        if self._ca is not None:
            self._closing = True
            ca, self._ca = self._ca, None
            for subscription in self._subscriptions:
                subscription.clear()
            self._subscriptions.clear()
            ca.close()


def _text(raw: bytes | str) -> str:
    """An EPICS string (bytes, NUL-padded, latin-1 as caproto's default) as str."""
    if isinstance(raw, str):
        return raw
    return bytes(raw).split(b"\0", 1)[0].decode("latin-1")


def _units(units: dict[str, str], keys: list[str]) -> dict[str, Any]:
    """``{"units": {key: unit}}`` for the keys that have units, or ``{}``."""
    found = {k: units[k] for k in keys if k in units}
    return {"units": found} if found else {}


def _value(data: Any, scalar: bool) -> np.ndarray | bytes:
    """A monitor's value as the source emits it (see :class:`EpicsSource`)."""
    array = np.asarray(data)
    if array.dtype.kind in "SU":  # DBR_STRING
        strings = [bytes(s) if isinstance(s, bytes) else s.encode("latin-1") for s in array.ravel()]
        if scalar and len(strings) == 1:
            return strings[0]
        value = np.array(strings, dtype="S40")
    else:
        value = array.astype(array.dtype.newbyteorder("="), copy=True)
        if scalar and value.size == 1:
            value = value.reshape(())
    value.flags.writeable = False
    return value
