"""Who may talk to the viewer and the manager over HTTP: the ``Host`` names they answer and the
``Origin`` s the viewer's websocket accepts (docs/viewer.md and docs/manager.md, "Who may
connect").

A page of any web site open in the user's browser can send requests to ``127.0.0.1``. Two
checks keep such pages out:

* ``Host``, on every request (:class:`HostCheck`, Starlette's ``TrustedHostMiddleware``): only
  the localhost names, the machine's own names and addresses when the server listens beyond
  loopback, and the hosts given with ``--allowed-host`` / ``--ui-allowed-host``. A site whose
  DNS name was pointed at this machine (DNS rebinding) sends its own name: refused with 400.
* ``Origin``, on the viewer's websocket (:func:`origin_refusal`): a browser names the page that
  opens a websocket, and only the viewer's own pages (the same host and port as the request's
  ``Host``) or a page on a configured host may read the live data. A client that is not a
  browser sends no ``Origin`` and is let in (it could claim any origin anyway).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("beampipe.http")

LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
"""The names of this machine's loopback interface, as a ``Host`` header gives them."""

_PASSED = "beampipe.host_allowed"
"""Scope key set once a request has passed the ``Host`` check."""


@dataclass
class Refusals:
    """Requests refused by the checks of this module (shown by the viewer's status)."""

    host: int = 0
    """Requests whose ``Host`` is not allowed."""
    origin: int = 0
    """Websockets opened by a page of another origin."""


def host_name(text: str) -> str:
    """``text`` as a ``Host`` header names it: lower case, an IPv6 address in brackets; a
    leading ``*.`` matches every subdomain.

    Raises:
        ValueError: ``text`` has a port, or a ``*`` elsewhere than in a leading ``*.``.
    """
    name = text.strip().lower()
    try:
        if ipaddress.ip_address(name.strip("[]")).version == 6:
            return f"[{name.strip('[]')}]"
    except ValueError:
        pass
    if not name or ":" in name or "/" in name:
        raise ValueError(f"{text!r}: give a host name or address, without scheme or port")
    if "*" in name[1:] or (name.startswith("*") and not name.startswith("*.")):
        raise ValueError(f"{text!r}: a wildcard must be a leading '*.' (as in *.example.org)")
    return name


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names a server listening on address ``bind`` answers: the localhost names;
    unless ``bind`` is a loopback address, also this machine's host name, fully qualified name
    and ``bind`` itself (for ``0.0.0.0`` or ``::``: the addresses the host name resolves to);
    then ``extra`` (see :func:`host_name`).

    Raises:
        ValueError: an ``extra`` that is not a host name.
    """
    names = list(LOCAL_NAMES)
    if not _loopback(bind):
        names += [socket.gethostname(), socket.getfqdn()]
        if _unspecified(bind):
            names += _addresses(socket.gethostname())
        else:
            names.append(bind)
    return list(dict.fromkeys([*map(host_name, names), *map(host_name, extra)]))


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _addresses(name: str) -> list[str]:
    """The addresses ``name`` resolves to (none if it does not)."""
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(name, None)})
    except OSError:
        return []


def _matches(host: str, patterns: Iterable[str]) -> bool:
    return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)


class HostCheck:
    """Starlette's ``TrustedHostMiddleware`` in front of ``app`` (400 for a ``Host`` not in
    ``hosts``), each refusal logged (logger ``beampipe.http``, naming ``server`` and the
    ``option`` that allows more names) and counted in ``refusals``."""

    def __init__(
        self, app: ASGIApp, hosts: Sequence[str], refusals: Refusals, server: str, option: str
    ) -> None:
        self.app = app
        self.hosts = list(hosts)
        self.refusals = refusals
        self.server = server
        self.option = option
        self._trusted = TrustedHostMiddleware(self._passed, allowed_hosts=hosts, www_redirect=False)

    async def _passed(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_PASSED] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._trusted(scope, receive, send)
        if scope["type"] in ("http", "websocket") and not scope.get(_PASSED):
            self.refusals.host += 1
            log.warning(
                "%s: refused a request for %s with Host %r from %s: it answers %s only "
                "(%s allows another name)",
                self.server,
                scope.get("path"),
                Headers(scope=scope).get("host"),
                _client(scope),
                ", ".join(self.hosts),
                self.option,
            )


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


def origin_refusal(headers: Headers, configured: Iterable[str]) -> str | None:
    """Why a websocket request with ``headers`` comes from a page that may not open it, or None
    if it may: no ``Origin`` (not a browser), the origin of the page the request is for (its
    ``Host``), or an http(s) page on a ``configured`` host (see :func:`host_name`)."""
    origin = headers.get("origin")
    if origin is None:
        return None
    try:
        parts = urlsplit(origin)
        same = parts.netloc.lower() == headers.get("host", "").lower()
        host = host_name(parts.hostname or "")
    except ValueError:
        return f"Origin {origin!r} is not an http(s) origin"
    if parts.scheme not in ("http", "https"):
        return f"Origin {origin!r} is not an http(s) origin"
    if same or _matches(host, [host_name(h) for h in configured]):
        return None
    return f"Origin {origin!r} is another site than {headers.get('host')!r}"
