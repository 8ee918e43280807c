"""The tap (beampipe.runtime.tap): subscribed ports only, small messages all, large conflated."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from beampipe.message import EndOfStream, Message, StreamStart, decode, encode
from beampipe.runtime.tap import SMALL, Tap, topic


@pytest.fixture
def pair(tmp_path):
    ctx = zmq.Context()
    tap = Tap(ctx, f"ipc://{tmp_path}/tap")
    sub = ctx.socket(zmq.SUB)
    sub.connect(tap.endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, topic("out"))
    deadline = time.monotonic() + 10
    while "out" not in tap.watched:
        assert time.monotonic() < deadline, "subscription never arrived"
        tap.socket.poll(100)
        tap.handle()
    yield tap, sub
    ctx.destroy(linger=0)


def offer(tap: Tap, port: str, item) -> None:
    tap.offer(port, item, encode(item))


def received(sub: zmq.Socket) -> list:
    out = []
    while sub.poll(200):
        port, *frames = sub.recv_multipart()
        assert port == topic("out")
        out.append(decode(frames))
    return out


def test_only_watched_ports_are_published_and_small_messages_all(pair):
    tap, sub = pair
    offer(tap, "other", Message(data={"x": np.float64(-1)}, stream="s", id=99))
    offer(tap, "out", StreamStart("s", {"n": 3}))
    for i in range(1, 4):
        offer(tap, "out", Message(data={"x": np.float64(i)}, stream="s", id=i))
    offer(tap, "out", EndOfStream("s", 3))
    items = received(sub)
    assert isinstance(items[0], StreamStart) and items[0].metadata == {"n": 3}
    assert [m.id for m in items[1:4]] == [1, 2, 3]
    assert [float(m.data["x"]) for m in items[1:4]] == [1.0, 2.0, 3.0]
    assert isinstance(items[4], EndOfStream) and len(items) == 5


def test_large_messages_are_conflated_and_the_last_is_always_published(pair):
    tap, sub = pair
    n = 20
    for i in range(1, n + 1):
        image = np.full((SMALL // 8 + 1,), i, dtype=np.float64)
        offer(tap, "out", Message(data={"image": image}, stream="s", id=i))
    deadline = time.monotonic() + 10
    while tap.next_flush is not None:
        assert time.monotonic() < deadline
        time.sleep(max(0.0, tap.next_flush - time.monotonic()))
        tap.flush()
    items = received(sub)
    ids = [m.id for m in items]
    assert ids[0] == 1 and ids[-1] == n
    assert len(ids) < n and tap.dropped == n - len(ids)
    assert np.all(items[-1].data["image"] == n)


def test_end_of_stream_publishes_the_waiting_frame_first(pair):
    tap, sub = pair
    for i in (1, 2):
        image = np.full((SMALL,), i, dtype=np.uint8)
        offer(tap, "out", Message(data={"image": image}, stream="s", id=i))
    offer(tap, "out", EndOfStream("s", 2))
    items = received(sub)
    assert [type(m).__name__ for m in items] == ["Message", "Message", "EndOfStream"]
    assert [m.id for m in items[:2]] == [1, 2]


def test_unsubscribe_stops_publishing(pair):
    tap, sub = pair
    sub.setsockopt(zmq.UNSUBSCRIBE, topic("out"))
    deadline = time.monotonic() + 10
    while "out" in tap.watched:
        assert time.monotonic() < deadline
        tap.socket.poll(100)
        tap.handle()
    offer(tap, "out", Message(data={"x": np.float64(1)}, stream="s", id=1))
    assert not sub.poll(200)
