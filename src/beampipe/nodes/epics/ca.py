"""EPICS Channel Access plumbing shared by ``epics_source`` and ``epics_sink``.

Each node holds one :class:`ChannelAccess`: a caproto threading-client context
(https://caproto.github.io/caproto/threading-client.html) with a broadcaster of its own,
closed with the node. Channel Access finds a PV by a UDP search sent to the addresses of
``EPICS_CA_ADDR_LIST`` (and, with ``EPICS_CA_AUTO_ADDR_LIST=YES``, the broadcast address of every
network interface) on port ``EPICS_CA_SERVER_PORT``; a PV that no server answers for within the
node's ``timeout`` is a :class:`PVConnectionError` that names the PV and these settings.
"""

from __future__ import annotations

import os
import time
from typing import Any

import beampipe

__all__ = ["ENVIRONMENT", "ChannelAccess", "PVConnectionError", "environment"]

ENVIRONMENT: dict[str, str] = {
    "EPICS_CA_ADDR_LIST": "",
    "EPICS_CA_AUTO_ADDR_LIST": "YES",
    "EPICS_CA_SERVER_PORT": "5064",
    "EPICS_CA_REPEATER_PORT": "5065",
}
"""The client settings that decide where a PV is searched for, with Channel Access's defaults."""


def environment() -> str:
    """The Channel Access client settings in force, e.g. ``EPICS_CA_ADDR_LIST='10.0.0.255',
    EPICS_CA_AUTO_ADDR_LIST='NO', EPICS_CA_SERVER_PORT=(unset: 5064), ...``."""
    parts = []
    for name, default in ENVIRONMENT.items():
        value = os.environ.get(name)
        parts.append(f"{name}={value!r}" if value is not None else f"{name}=(unset: {default!r})")
    return ", ".join(parts)


class PVConnectionError(beampipe.TransientError, TimeoutError):
    """PVs that no Channel Access server answered for within the timeout.

    A :class:`beampipe.TransientError`, so a sink node's ``retries`` apply (an IOC that is
    restarting comes back).

    Attributes:
        pvs: the names of the PVs that did not connect.
    """

    def __init__(self, node: str, pvs: list[str], timeout: float, where: str = "") -> None:
        self.pvs = pvs
        names = ", ".join(repr(name) for name in pvs)
        noun = "PV" if len(pvs) == 1 else "PVs"
        super().__init__(
            f"{node}: {noun} {names} did not connect within {timeout:g} s{where}. Check the PV "
            f"name, that the IOC serving it runs and can be reached from this host, and the "
            f"Channel Access environment: {environment()}"
        )


class ChannelAccess:
    """One caproto threading-client context with a broadcaster of its own.

    Args:
        node: the node's name, for error messages.
        timeout: seconds to wait for a PV to connect, and for a read or a put to complete.

    Raises:
        ImportError: caproto is not installed (``pip install 'beampipe[epics]'``).
    """

    def __init__(self, node: str, timeout: float) -> None:
        try:
            from caproto.threading.client import Context, SharedBroadcaster
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"{node}: the EPICS connectors need caproto (pip install 'beampipe[epics]'): {exc}"
            ) from exc
        self.node = node
        self.timeout = timeout
        self._broadcaster = SharedBroadcaster()
        self.context = Context(self._broadcaster, timeout=timeout)

    def connect(self, names: list[str], where: str = "", **callbacks: Any) -> list[Any]:
        """The caproto ``PV`` objects of ``names``, each connected.

        Args:
            names: PV names.
            where: appended to the error message (e.g. ``" (stream 'x', message 3)"``).
            callbacks: passed to ``Context.get_pvs`` (``connection_state_callback``).

        Raises:
            PVConnectionError: naming every PV that did not connect within the timeout (all
                are waited for at once).
        """
        from caproto import CaprotoTimeoutError

        pvs = self.context.get_pvs(*names, timeout=self.timeout, **callbacks)
        deadline = time.monotonic() + self.timeout
        missing = []
        for pv in pvs:
            try:
                pv.wait_for_connection(timeout=max(0.0, deadline - time.monotonic()))
            except CaprotoTimeoutError:
                missing.append(pv.name)
        if missing:
            raise PVConnectionError(self.node, missing, self.timeout, where)
        return pvs

    def close(self) -> None:
        """Disconnect every channel and stop the client's threads."""
        self.context.disconnect(wait=True)
        self._broadcaster.disconnect(wait=True)
