"""The typed control protocol between node processes and the launcher (beampipe.runtime.control)."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from pathlib import Path

import msgpack
import pytest
from conftest import EXAMPLE, Recorder

from beampipe.config import load_pipeline
from beampipe.launch import Launcher
from beampipe.launch.handling import HANDLERS as launcher_handlers
from beampipe.launch.replica import Replica
from beampipe.runtime import control
from beampipe.runtime.control import (
    KINDS,
    Control,
    ControlError,
    Failed,
    Hello,
    Stop,
    decode,
    dispatch,
    encode,
)
from beampipe.runtime.wiring import HANDLERS as node_handlers

EXAMPLES = {
    "hello": Hello("mu", 1, 4242, "host1"),
    "bound": control.Bound({"out": "tcp://h:1"}, "tcp://h:2"),
    "inputs_added": control.InputsAdded(),
    "progress": control.Progress({"scan1": 12}, {"messages_in": 12}),
    "stream_end": control.StreamEnded("scan1", 12, 1.5, 2.5),
    "error": Failed("mu", 0, "scan1", 7, "ValueError: bad", "Traceback ...", False),
    "done": control.Done({"out": 12}, {"messages_in": 12}),
    "setup": control.Setup({"name": "p"}, "ipc:///tmp/{name}", "/tmp/state", 64, 1 << 26),
    "connect": control.Connect([{"port": "in", "upstream": "scan#0.out", "endpoint": "e"}]),
    "stop": Stop(),
    "drain": control.Drain(),
    "peer_lost": control.PeerLost("mu.in", 1),
    "peer_gone": control.PeerGone("mu.in", 1),
    "retire": control.Retire("mu.in", 2),
    "upstream_gone": control.UpstreamGone("scan#0."),
    "redelivered": control.Redelivered("mu.in", 1),
    "upstream_redelivered": control.UpstreamRedelivered("mu#1."),
    "add_inputs": control.AddInputs([{"port": "in", "upstream": "mu#2.out", "endpoint": "e"}]),
    "reconnect": control.Reconnect("mu#0.out", "tcp://h:3"),
}


def test_every_kind_round_trips_and_keeps_its_wire_form():
    assert set(KINDS) == set(EXAMPLES)  # a new kind needs an example here
    for kind, msg in EXAMPLES.items():
        frame = encode(msg)
        assert msgpack.unpackb(frame) == {"t": kind, **dataclasses.asdict(msg)}
        assert decode(frame) == msg


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (b"\xc1", "unreadable control frame of 1 bytes"),
        (msgpack.packb([1, 2]), "control frame is a list, not a map"),
        (msgpack.packb({"t": "status", "token": 12345}), "unknown control message kind 'status'"),
        (msgpack.packb({"pid": 1}), "unknown control message kind None"),
        (msgpack.packb({"t": "hello", "node": "mu"}), "control message 'hello': "),
        (msgpack.packb({"t": "stop", "now": True}), "control message 'stop': "),
        (
            msgpack.packb({"t": "hello", "node": "mu", "replica": "0", "pid": 1, "host": "h"}),
            "control message 'hello': field 'replica' is a str, not <class 'int'>",
        ),
        (
            msgpack.packb({"t": "hello", "node": "mu", "replica": True, "pid": 1, "host": "h"}),
            "control message 'hello': field 'replica' is a bool",
        ),
        (
            msgpack.packb({"t": "connect", "inputs": [{"port": 1}]}),
            "control message 'connect': field 'inputs' is a list, not list",
        ),
        (
            msgpack.packb({"t": "progress", "streams": {"s": "x"}, "metrics": {}}),
            "control message 'progress': field 'streams' is a dict",
        ),
    ],
)
def test_frames_not_of_the_protocol_are_named(frame, problem):
    with pytest.raises(ControlError, match="^" + problem.replace("(", r"\(")):
        decode(frame)


def test_each_side_handles_exactly_the_kinds_the_other_sends():
    launcher, node = set(launcher_handlers), set(node_handlers)
    assert not launcher & node
    assert launcher | node | {control.Setup, control.Connect} == set(KINDS.values())
    assert all(issubclass(cls, Control) for cls in launcher | node)
    with pytest.raises(ControlError, match="unexpected control message 'hello'"):
        dispatch(Hello("mu", 0, 1, "h"), {Stop: print})


def test_no_message_a_handler_cannot_take_ends_the_launcher():
    """A kind a node does not send, and an ``inputs_added`` no ``add_inputs`` asked for (a
    KeyError in its handler), are ignored and reported: the launcher goes on."""
    recorder = Recorder()
    launcher = Launcher(load_pipeline(EXAMPLE / "pipeline.yaml"), recorder)
    rep = Replica("mu", 0, None, Path("mu.0.log"))
    launcher.answer(rep, Stop())
    launcher.answer(rep, control.InputsAdded())
    assert recorder.failures == [
        "ignored the control message 'stop' from node 'mu' replica 0: ControlError: "
        "unexpected control message 'stop'",
        "ignored the control message 'inputs_added' from node 'mu' replica 0: KeyError: b'mu#0'",
    ]


def test_a_launcher_is_freed_when_dropped():
    """No reference cycle (e.g. a table of its bound methods): its zmq context is then closed at
    once, not by the cycle collector later, which can block for ever in ``Context.term`` while
    the context's sockets wait for their own finalizers."""
    gc.disable()
    try:
        launcher = Launcher(load_pipeline(EXAMPLE / "pipeline.yaml"), Recorder())
        dropped = weakref.ref(launcher)
        del launcher
        assert dropped() is None
    finally:
        gc.enable()
