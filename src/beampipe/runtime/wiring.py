"""Wiring: the sockets of a node process, set up with its launcher and changed while it runs.

Set-up, over the control channel (:mod:`beampipe.runtime.control`; the whole sequence is in
:mod:`beampipe.runtime.startup`): the node says ``hello`` and gets ``setup``, the validated
pipeline (:meth:`Wiring.hello`); it builds its worker, binds one ROUTER per output port and the
tap for viewers and reports their endpoints, ``bound`` (:meth:`Wiring.bind`); then it gets
``connect`` and connects one input pipe to every upstream output port replica that feeds it
(:meth:`Wiring.connect`).

While it runs, the launcher rewires it (:meth:`Wiring.on_control`): ``peer_lost``, ``retire``
and ``peer_gone`` for a downstream replica that died, is being removed or died for good (once
the messages it had not acknowledged were sent to the others and acknowledged, the node says
``redelivered``); ``upstream_gone`` for an upstream replica that died for good (its pipes are
read no more and are listed in :attr:`Wiring.gone`) and ``upstream_redelivered`` once what it
held went through the other replicas (its pipes count as finished and are listed in
:attr:`Wiring.redelivered`); ``add_inputs`` for upstream replicas added while running
(``beampipe scale``); ``reconnect`` for a restarted upstream replica. ``stop`` raises
:class:`Stopped`; ``drain`` sets :attr:`Wiring.draining`.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from typing import Any, TypeVar

import zmq

from beampipe.config import Pipeline
from beampipe.message.key import compile_key
from beampipe.runtime.control import (
    AddInputs,
    Bound,
    Connect,
    Control,
    ControlClient,
    ControlError,
    Drain,
    Handler,
    Hello,
    InputsAdded,
    PeerGone,
    PeerLost,
    Reconnect,
    Redelivered,
    Retire,
    Setup,
    Stop,
    UpstreamGone,
    UpstreamRedelivered,
    dispatch,
)
from beampipe.runtime.tap import Tap
from beampipe.transport import InputChannel, OutputPort, Route
from beampipe.transport.address import advertised
from beampipe.transport.security import Credentials, Gate

M = TypeVar("M", bound=Control)


class Stopped(Exception):
    """The launcher asked this node to stop, or the launcher is gone."""


class Wiring:
    """The sockets of one node replica: control channel, output ports, tap and input pipes.

    Attributes:
        outputs: the output ports by name (bound by :meth:`bind`).
        inputs: the input pipes, in the order connected; a pipe's index in this list names it
            elsewhere (stream ends, reorder buffers).
        index: the index of each input pipe.
        gone: indices of input pipes from upstream replicas that died for good, not yet
            accounted for by the node.
        redelivered: indices of such pipes whose replica's messages went through the other
            replicas: finished now, not yet accounted for by the node.
        draining: a source was asked to end its streams and finish (``drain``).
        poller: polls control, output, tap and input sockets.
        out_poller: polls control, output and tap sockets only: waiting for credit must not
            wake up for input.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        control_endpoint: str,
        node: str,
        replica: int,
        credentials: Credentials,
    ) -> None:
        self.ctx = ctx
        self.node = node
        self.replica = replica
        self.credentials = credentials
        """The run's credentials, presented to the launcher and upstream ports."""
        self.gate = Gate(ctx, credentials, on_refuse=log)
        """Admits only the run's processes to the output ports and the tap."""
        self.control = ControlClient(ctx, control_endpoint, node, replica, credentials)
        self.parent = os.getppid()
        self.outputs: dict[str, OutputPort] = {}
        self.inputs: list[InputChannel] = []
        self.index: dict[InputChannel, int] = {}
        self.tap: Tap | None = None
        """The side channel for viewers (:mod:`beampipe.runtime.tap`), if the node sends."""
        self.window = self.window_bytes = 0
        """Credit of each input pipe (from ``setup``)."""
        self.gone: list[int] = []
        self.redelivered: list[int] = []
        self.dropped: set[int] = set()
        """Pipes from upstream replicas that died for good, not yet finished."""
        self.draining = False
        self.poller = zmq.Poller()
        self.out_poller = zmq.Poller()

    # -- set-up --------------------------------------------------------------------------------

    def hello(self) -> Setup:
        """Introduce this process to the launcher; the :class:`Setup` it answers with."""
        self.control.send(Hello(self.node, self.replica, os.getpid(), socket.gethostname()))
        return self.await_(Setup)

    def bind(self, pipeline: Pipeline, setup: Setup) -> None:
        """Bind the node's output ports (and the tap, if it has any) at the ``setup``'s address
        pattern and report their endpoints (``bound``)."""
        node, replica = self.node, self.replica
        for port in dict.fromkeys(c.source_port for c in pipeline.outputs_of(node)):
            routes = [
                Route(
                    f"{c.target}.{c.target_port}",
                    pipeline.nodes[c.target].replicas,
                    c.routing,
                    compile_key(c.key) if c.key else None,
                )
                for c in pipeline.outputs_of(node)
                if c.source_port == port
            ]
            address = setup.bind.format(name=f"{node}-{replica}-{port}")
            out = OutputPort.bind(self.ctx, port, address, routes, self.gate)
            out.on_reject = log
            self.outputs[port] = out
            self.poller.register(out.socket, zmq.POLLIN)
            self.out_poller.register(out.socket, zmq.POLLIN)
        if self.outputs:
            self.tap = Tap(self.ctx, setup.bind.format(name=f"{node}-{replica}-tap"), self.gate)
            self.poller.register(self.tap.socket, zmq.POLLIN)
            self.out_poller.register(self.tap.socket, zmq.POLLIN)
        endpoints = {p: advertised(o.endpoint) for p, o in self.outputs.items()}
        tap = advertised(self.tap.endpoint) if self.tap is not None else None
        self.control.send(Bound(endpoints, tap))
        self.window, self.window_bytes = setup.window, setup.window_bytes

    def connect(self) -> None:
        """Wait for ``connect`` and connect the input pipes it lists."""
        for spec in self.await_(Connect).inputs:
            self.add_input(spec)
        self.poller.register(self.control.socket, zmq.POLLIN)
        self.out_poller.register(self.control.socket, zmq.POLLIN)

    def await_(self, kind: type[M]) -> M:
        """The next control message of class ``kind`` (a :class:`Drain` meanwhile is kept).

        Raises:
            Stopped: the launcher said :class:`Stop`, or is gone.
        """
        while True:
            try:
                msg = self.control.recv(500)
            except ControlError as exc:
                log(f"ignored a control frame from the launcher: {exc}")
                continue
            if msg is None:
                self.check_parent()
                continue
            if isinstance(msg, Stop):
                raise Stopped()
            if isinstance(msg, Drain):  # asked before it started: a source ends at once
                self.draining = True
            if isinstance(msg, kind):
                return msg

    def add_input(self, spec: dict[str, Any]) -> InputChannel:
        """Connect an input pipe: ``spec`` is ``{port, upstream, endpoint}``."""
        channel = InputChannel.connect(
            self.ctx,
            port=spec["port"],
            target=f"{self.node}.{spec['port']}",
            replica=self.replica,
            upstream=spec["upstream"],
            endpoint=spec["endpoint"],
            window=self.window,
            byte_window=self.window_bytes,
            credentials=self.credentials,
        )
        self.index[channel] = len(self.inputs)
        self.inputs.append(channel)
        self.poller.register(channel.socket, zmq.POLLIN)
        return channel

    # -- while running -------------------------------------------------------------------------

    def _on_control(self) -> None:
        """Do what the launcher's waiting messages ask; one that is not of the protocol, or
        not one a running node receives, is ignored with a line in the log."""
        while True:
            try:
                msg = self.control.recv(0)
                if msg is None:
                    return
                dispatch(msg, HANDLERS, self)
            except ControlError as exc:
                log(f"ignored a control message from the launcher: {exc}")

    def check_parent(self) -> None:
        """Raise :class:`Stopped` if the launcher process is gone."""
        if os.getppid() != self.parent:
            raise Stopped()

    def _on_stop(self, msg: Stop) -> None:
        raise Stopped()

    def _on_drain(self, msg: Drain) -> None:
        self.draining = True

    def _on_peer_lost(self, msg: PeerLost) -> None:
        for out in self.outputs.values():
            out.lost(msg.target, msg.replica)

    def _on_retire(self, msg: Retire) -> None:
        for out in self.outputs.values():
            out.retire(msg.target, msg.replica)

    def _on_peer_gone(self, msg: PeerGone) -> None:
        """Send what ``msg``'s replica had not acknowledged to the other replicas; say
        ``redelivered`` once each output port had all of it acknowledged."""
        waiting = len(self.outputs)

        def settled() -> None:
            nonlocal waiting
            waiting -= 1
            if not waiting:
                self.control.send(Redelivered(msg.target, msg.replica))

        for out in list(self.outputs.values()):
            out.forget(msg.target, msg.replica, settled)

    def _on_add_inputs(self, msg: AddInputs) -> None:
        for spec in msg.inputs:
            self.add_input(spec)
        self.control.send(InputsAdded())

    def _on_reconnect(self, msg: Reconnect) -> None:
        for channel in self.inputs:
            if channel.upstream == msg.upstream:
                self.poller.unregister(channel.socket)
                channel.reconnect(self.ctx, msg.endpoint)
                self.poller.register(channel.socket, zmq.POLLIN)

    def _on_upstream_gone(self, msg: UpstreamGone) -> None:
        """The upstream replica ``msg.upstream`` (``node#replica.``) died for good: its pipes
        are read no more."""
        for channel in self.inputs:
            pipe = self.index[channel]
            ours = channel.upstream.startswith(msg.upstream)
            if ours and not channel.finished and pipe not in self.dropped:
                # What it sent and we did not process comes again through another
                # replica: its sender did not get our acknowledgement for it.
                self.poller.unregister(channel.socket)
                self.dropped.add(pipe)
                self.gone.append(pipe)

    def _on_upstream_redelivered(self, msg: UpstreamRedelivered) -> None:
        """What the dead upstream replica ``msg.upstream`` held went through the other
        replicas: its pipes count as finished."""
        for channel in self.inputs:
            pipe = self.index[channel]
            if channel.upstream.startswith(msg.upstream) and pipe in self.dropped:
                self.dropped.discard(pipe)
                channel.finished = True
                self.redelivered.append(pipe)

    def poll(self, timeout_ms: int, inputs: bool) -> list[InputChannel]:
        """Poll the sockets once (the inputs too if ``inputs``), at most ``timeout_ms`` (less if
        the tap is due to publish): answer the tap's subscribers, the launcher and the output
        ports' peers; the input pipes with items to take, if ``inputs``."""
        if inputs and any(ch.pending for ch in self.inputs):
            timeout_ms = 0
        tap = self.tap
        if tap is not None and tap.next_flush is not None:
            wait = math.ceil(1000 * (tap.next_flush - time.monotonic()))
            timeout_ms = max(0, min(timeout_ms, wait))
        events = dict((self.poller if inputs else self.out_poller).poll(timeout_ms))
        if not events:
            self.check_parent()
        if tap is not None:
            if tap.socket in events:
                tap.handle()
            tap.flush()
        if self.control.socket in events:
            self._on_control()
        for out in self.outputs.values():
            if out.socket in events:
                while out.socket.poll(0):
                    out.handle(out.socket.recv_multipart())
        if not inputs:
            return []
        return [ch for ch in self.inputs if ch.socket in events or ch.pending]


def log(text: str) -> None:
    """A line in the node's log (its standard error, which the launcher keeps)."""
    print(text, file=sys.stderr, flush=True)


HANDLERS: dict[type[Control], Handler] = {
    Stop: Wiring._on_stop,
    Drain: Wiring._on_drain,
    PeerLost: Wiring._on_peer_lost,
    Retire: Wiring._on_retire,
    PeerGone: Wiring._on_peer_gone,
    UpstreamGone: Wiring._on_upstream_gone,
    UpstreamRedelivered: Wiring._on_upstream_redelivered,
    AddInputs: Wiring._on_add_inputs,
    Reconnect: Wiring._on_reconnect,
}
"""The node's dispatch table: ``handler(wiring, message)`` per kind the launcher sends while
the node runs (:class:`Setup` and :class:`Connect` are awaited during set-up)."""
