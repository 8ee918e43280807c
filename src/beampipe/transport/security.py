"""Who may connect: every socket of a run admits only the processes that hold its secret.

A run's :class:`Credentials` are one secret, a CurveZMQ secret key made by
``zmq.curve_keypair()`` when the launcher starts (a deployed pipeline's supervisor uses the
manager's token instead). The launcher hands it to each node process in its environment,
:data:`SECRET_ENV` (``/proc/PID/environ`` is readable by the process's owner only, unlike its
command line). Every socket that binds (an output port's ROUTER, the tap's XPUB, the launcher's
control ROUTER, a supervisor's command ROUTER) is a ZeroMQ security *server*, every socket that
connects a *client*, with ZeroMQ's own mechanisms:

* ``PLAIN`` (the default): the client presents a password derived from the secret, which the
  process's :class:`Gate` checks (a ZAP handler: pyzmq's :class:`zmq.auth.Authenticator`)
  before libzmq accepts the connection. The traffic is not encrypted, so on a network that
  others can read use CURVE.
* ``CURVE`` (the pipeline's ``encrypt: true``): every process of the run holds the key pair of
  the secret; clients know the server's public key, the gate admits only clients whose public
  key is the run's, and every frame is encrypted.

A peer that fails the handshake (no security, another mechanism, a wrong password or key, not
ZMTP at all) is refused by libzmq before anything it sends reaches the socket: nothing it sends
is acted on. The gate watches the server sockets' handshake failures (socket monitor events),
counts them (:attr:`Gate.refused`) and reports each (:attr:`Gate.on_refuse`).

The gate runs in a thread of its own rather than in the process's poll loop: a handshake is
answered while the main thread works in a worker call or waits in a send, and the data path
polls no extra socket. ZAP is asked once per connection, so authentication costs nothing per
message (``bench/security.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import zmq
from zmq.auth import Authenticator
from zmq.utils.monitor import parse_monitor_message

SECRET_ENV = "BEAMPIPE_SECRET"
"""The environment variable that carries a run's credentials to its node processes:
``plain:SECRET`` or ``curve:SECRET``."""
USER = "beampipe"
"""The PLAIN user name (the password is what proves membership)."""
REFUSALS = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
"""The monitor events of a refused connection."""
REPORTED = 10
"""Refusals reported one by one; after these, every 100th."""

_LOG = logging.getLogger("beampipe.security")


class CredentialsError(ValueError):
    """Credentials that cannot be used (a malformed :data:`SECRET_ENV`)."""


@dataclass(frozen=True)
class Credentials:
    """What the processes of one run (or a manager and its supervisors) prove to each other.

    Attributes:
        secret: the shared secret: a Z85 CurveZMQ secret key (40 characters) for a run, the
            manager's token for a supervisor.
        encrypt: use CURVE (authenticated and encrypted) rather than PLAIN (authenticated).
    """

    secret: str
    encrypt: bool = False

    @classmethod
    def generate(cls, encrypt: bool = False) -> Credentials:
        """New credentials for a run: the secret key of ``zmq.curve_keypair()``."""
        return cls(zmq.curve_keypair()[1].decode(), encrypt)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Credentials:
        """The credentials a launcher gave this process (:data:`SECRET_ENV`).

        Raises:
            CredentialsError: the variable is missing or not ``plain:...``/``curve:...``.
        """
        value = environ.get(SECRET_ENV)
        if value is None:
            raise CredentialsError(
                f"{SECRET_ENV} is not set: a node process is started by a launcher, which "
                "gives it the run's credentials"
            )
        mechanism, _, secret = value.partition(":")
        if mechanism not in ("plain", "curve") or not secret:
            raise CredentialsError(f"{SECRET_ENV} is not 'plain:SECRET' or 'curve:SECRET'")
        if mechanism == "curve" and len(secret) != 40:
            raise CredentialsError(f"{SECRET_ENV}: a CURVE secret is 40 Z85 characters")
        return cls(secret, mechanism == "curve")

    def env(self) -> dict[str, str]:
        """The environment that gives a process these credentials (:meth:`from_env`)."""
        return {SECRET_ENV: f"{'curve' if self.encrypt else 'plain'}:{self.secret}"}

    @property
    def password(self) -> bytes:
        """The PLAIN password: a hash of the secret, so that a password read off an
        unencrypted network does not give away a CURVE key."""
        return hashlib.blake2b(self.secret.encode(), person=b"beampipe-plain").hexdigest().encode()

    @property
    def public_key(self) -> bytes:
        """The CURVE public key of the secret (Z85)."""
        return zmq.curve_public(self.secret.encode())

    def client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before it connects) present these credentials."""
        if self.encrypt:
            public = self.public_key
            sock.setsockopt(zmq.CURVE_SERVERKEY, public)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret.encode())
        else:
            sock.setsockopt(zmq.PLAIN_USERNAME, USER.encode())
            sock.setsockopt(zmq.PLAIN_PASSWORD, self.password)

    def server(self, sock: zmq.Socket, domain: str) -> None:
        """Make ``sock`` (before it binds) require these credentials, checked by the ZAP
        handler of its context for ``domain`` (:class:`Gate`)."""
        sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
        if self.encrypt:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        else:
            sock.setsockopt(zmq.PLAIN_SERVER, 1)


class _OneKey:
    """pyzmq's CURVE credentials provider: admits the one public key of a run."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.key


class Gate:
    """The ZAP handler of one ZeroMQ context, and the watch on its server sockets.

    Args:
        ctx: the context whose server sockets it guards (ZAP is per context).
        credentials: what a client must present.
        on_refuse: told each refusal, in the gate's thread (e.g. a line in the node's log);
            the refusals are also kept for :meth:`take` (for a caller that reports them from
            its own thread).
        domain: the ZAP domain of the sockets it serves.

    Attributes:
        refused: connections refused so far (read from any thread).
    """

    def __init__(
        self,
        ctx: zmq.Context,
        credentials: Credentials,
        on_refuse: Callable[[str], None] | None = None,
        domain: str = "beampipe",
    ) -> None:
        self.ctx = ctx
        self.credentials = credentials
        self.on_refuse = on_refuse
        self.domain = domain
        self.refused = 0
        self._taken: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._authenticator = Authenticator(ctx, log=_LOG)
        if credentials.encrypt:
            provider = _OneKey(credentials.public_key)
            self._authenticator.configure_curve_callback(domain, provider)
        else:
            self._authenticator.configure_plain(domain, {USER: credentials.password.decode()})
        self._new: queue.SimpleQueue[tuple[zmq.Socket, str]] = queue.SimpleQueue()
        self._wake: zmq.Socket | None = None
        self._thread: threading.Thread | None = None

    def serve(self, sock: zmq.Socket, name: str) -> None:
        """Make ``sock`` (before it binds) a server that admits only these credentials, and
        watch it: a refused connection is counted and reported as ``name`` (``output 'out'``)."""
        if self._thread is None:
            self._start()
        self.credentials.server(sock, self.domain)
        self._new.put((sock.get_monitor_socket(REFUSALS), name))
        assert self._wake is not None
        self._wake.send(b"+")

    def take(self) -> list[str]:
        """The refusals reported since the last call."""
        taken = []
        while True:
            try:
                taken.append(self._taken.get_nowait())
            except queue.Empty:
                return taken

    def close(self) -> None:
        """Stop the thread (before the context is destroyed)."""
        if self._thread is not None and self._wake is not None:
            self._wake.send(b"")
            self._thread.join(5)
            self._wake.close(linger=0)
            self._thread = self._wake = None

    def _start(self) -> None:
        self._authenticator.start()  # binds the context's ZAP endpoint before any server binds
        address = f"inproc://beampipe-gate-{id(self)}"
        self._wake = self.ctx.socket(zmq.PAIR)
        self._wake.bind(address)
        inner = self.ctx.socket(zmq.PAIR)
        inner.connect(address)
        self._thread = threading.Thread(
            target=self._run, args=(inner,), name="beampipe-gate", daemon=True
        )
        self._thread.start()

    def _run(self, wake: zmq.Socket) -> None:
        zap = self._authenticator.zap_socket
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        watched: dict[zmq.Socket, str] = {}
        loop = asyncio.new_event_loop()
        try:
            while True:
                for sock, _ in poller.poll():
                    if sock is zap:
                        loop.run_until_complete(
                            self._authenticator.handle_zap_message(zap.recv_multipart())
                        )
                    elif sock is wake:
                        if not wake.recv():
                            return
                        while not self._new.empty():
                            monitor, name = self._new.get()
                            watched[monitor] = name
                            poller.register(monitor, zmq.POLLIN)
                    else:
                        self._refusal(watched[sock], parse_monitor_message(sock.recv_multipart()))
        finally:
            loop.close()
            for monitor in watched:
                monitor.close(linger=0)
            wake.close(linger=0)
            self._authenticator.stop()

    def _refusal(self, name: str, event: dict) -> None:
        """Count a refusal; report the first :data:`REPORTED` and then every 100th (a peer
        that is refused tries again every 0.1 s)."""
        self.refused += 1
        if self.refused > REPORTED and self.refused % 100:
            return
        text = (
            f"{name}: refused a connection to {event['endpoint'].decode()}: {_why(event)} "
            f"({self.refused} refused so far)"
        )
        self._taken.put(text)
        if self.on_refuse is not None:
            self.on_refuse(text)


def _why(event: dict) -> str:
    """What a handshake failure means, in words."""
    kind, value = event["event"], event["value"]
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"wrong credentials (ZAP status {value}): not a process of this run"
    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "no credentials of this run (security mechanism mismatch)"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return f"handshake protocol error {value:#x} (not a process of this run)"
    return "handshake failed (not a process of this run)"
