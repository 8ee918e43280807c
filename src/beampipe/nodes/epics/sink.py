"""Writes a result back to the control system: ``use: epics_sink``.

Every incoming message's ``field`` (from its data, else its metadata) is put to one EPICS PV over
Channel Access with caproto's threading client, e.g. a quality figure that the control system, an
operator screen or an agent reads. With ``wait: true`` each put waits for the IOC's
put-completion (``WRITE_NOTIFY``), so the next message is written only when the IOC has processed
the last one. Channel Access: https://docs.epics-controls.org/en/latest/internal/ca_protocol.html.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field, PositiveFloat

import beampipe
from beampipe.nodes.epics.ca import ChannelAccess, PVConnectionError

__all__ = ["EpicsSink", "MissingField", "PutError"]


class MissingField(KeyError):
    """A message has no data entry and no metadata key of the name the sink's ``field`` gives."""

    def __init__(self, node: str, field: str, msg: beampipe.Message) -> None:
        self.field = field
        super().__init__(
            f"{node}: message {msg.id} of stream {msg.stream!r} has no field {field!r}; data: "
            f"{', '.join(msg.data) or '(none)'}; metadata: {', '.join(msg.metadata) or '(none)'}"
        )

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class PutError(RuntimeError):
    """A put to the sink's PV failed.

    Attributes:
        pv: the PV name.
        stream, id: the message whose value was being written.
    """

    def __init__(self, node: str, pv: str, msg: beampipe.Message, problem: str) -> None:
        self.pv = pv
        self.stream = msg.stream
        self.id = msg.id
        super().__init__(
            f"{node}: put to PV {pv!r} failed (stream {msg.stream!r}, message {msg.id}): {problem}"
        )


class EpicsSink(beampipe.Worker):
    """Puts ``field`` of each message to the PV ``pv``, in arrival order.

    The PV is connected at the first message (and again after it disconnected). The value:
    a numeric array as its elements (a 0-d array as one element; bool as 0/1), ``bytes`` or a
    ``str`` as a string, a metadata number, string or list of numbers as it is. Channel Access
    converts it to the PV's native type (e.g. 2.7 put to a ``LONG`` PV becomes 2).

    With ``wait: true`` (the default) a put returns once the IOC reports its completion (the
    record has processed), within ``timeout``; with ``wait: false`` it returns once sent, and a
    value the IOC refuses is not noticed.

    Raises (from :meth:`process`; the node's ``on_error`` policy applies):
        MissingField: the message has no ``field`` in data nor metadata (a ``KeyError``).
        PVConnectionError: the PV did not connect within ``timeout``; names the PV, stream,
            message id and the ``EPICS_CA_*`` environment. A :class:`beampipe.TransientError`,
            so the node's ``retries`` apply.
        PutError: no write access to the PV; the IOC refused the value or did not complete
            the put within ``timeout`` (caproto's threading client does not pass on the IOC's
            error text: the IOC's log has it); the value cannot be converted to the PV's type.
        TypeError: the field is complex, or metadata that is not a number, string or list.
        ImportError: caproto is not installed.
    """

    outputs: ClassVar[tuple[str, ...]] = ()

    class Params(beampipe.Params):
        """``pv``: the PV to write. ``field``: the data name (or, if no data entry has that
        name, the metadata key) whose value is written. ``wait``: wait for the IOC's
        put-completion. ``timeout``: seconds to wait for the PV to connect and for a put
        to complete."""

        pv: str = Field(min_length=1)
        field: str = Field(min_length=1)
        wait: bool = True
        timeout: PositiveFloat = 5.0

    params: EpicsSink.Params

    def __init__(self, params: EpicsSink.Params, name: str = "") -> None:
        super().__init__(params, name)
        self._ca: ChannelAccess | None = None
        self._pv: Any = None

    def process(self, msg: beampipe.Message) -> None:
        """Put ``field`` of ``msg`` to the PV (see the class doc)."""
        from caproto import AccessRights, CaprotoError, CaprotoTimeoutError

        p = self.params
        value = self._value(msg)
        pv = self._connected(msg)
        if pv.access_rights is not None and not pv.access_rights & AccessRights.WRITE:
            raise PutError(self.name, p.pv, msg, "no write access to the PV from this host/user")
        try:
            response = pv.write(value, wait=p.wait, timeout=p.timeout)
        except CaprotoTimeoutError as exc:
            raise PutError(
                self.name,
                p.pv,
                msg,
                f"the IOC did not confirm the put within {p.timeout:g} s: it refused the value "
                f"(see the IOC's log) or is busy ({exc})",
            ) from exc
        except (CaprotoError, ValueError, TypeError, OverflowError) as exc:
            raise PutError(self.name, p.pv, msg, f"{type(exc).__name__}: {exc}") from exc
        if response is not None and not response.status.success:
            raise PutError(self.name, p.pv, msg, f"the IOC answered {response.status.name}")

    def _connected(self, msg: beampipe.Message) -> Any:
        """The connected PV (connecting it now if needed)."""
        where = f" (stream {msg.stream!r}, message {msg.id})"
        if self._ca is None:
            self._ca = ChannelAccess(self.name, self.params.timeout)
        if self._pv is None:
            (self._pv,) = self._ca.connect([self.params.pv], where)
        elif not self._pv.connected:
            from caproto import CaprotoTimeoutError

            try:
                self._pv.wait_for_connection(timeout=self.params.timeout)
            except CaprotoTimeoutError:
                raise PVConnectionError(
                    self.name, [self.params.pv], self.params.timeout, where
                ) from None
        return self._pv

    def _value(self, msg: beampipe.Message) -> Any:
        """``field`` of ``msg`` in a form caproto writes."""
        field = self.params.field
        if field in msg.data:
            value = msg.data[field]
            if isinstance(value, bytes):
                return [value]
            if value.dtype.kind == "c":
                raise TypeError(
                    f"{self.name}: field {field!r} of message {msg.id} (stream {msg.stream!r}) "
                    f"is complex; EPICS PVs hold real numbers"
                )
            if value.dtype.kind in "SU":
                return value.reshape(-1).tolist()
            if value.dtype.kind == "b":
                value = value.astype(np.uint8)
            return value.reshape(-1)
        if field in msg.metadata:
            value = msg.metadata[field]
            if isinstance(value, bool):
                return [int(value)]
            if isinstance(value, int | float | str):
                return [value]
            if isinstance(value, list) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value
            ):
                return value
            raise TypeError(
                f"{self.name}: metadata {field!r} of message {msg.id} (stream {msg.stream!r}) "
                f"is {type(value).__name__}, not a number, string or list of numbers"
            )
        raise MissingField(self.name, field, msg)

    def close(self) -> None:
        """Disconnect."""
        if self._ca is not None:
            ca, self._ca, self._pv = self._ca, None, None
            ca.close()
