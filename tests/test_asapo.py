"""asapo_source and asapo_sink against a FAKE of the ASAP::O client API (tests/fakes/asapo_fake).

No ASAP::O service stack can run here, so a fake broker process holds the beamtime's state and
the connectors load the fake client modules (``BEAMPIPE_ASAPO_CLIENT=asapo_fake``). The fake
follows the documented API; these tests show the connectors' behaviour on that API, not against
the real service. The last tests use the real wheels against an endpoint where nothing runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import NODES, beampipe, rows, run_pipeline

from beampipe.nodes.asapo.client import AsapoError
from beampipe.nodes.asapo.payload import decode
from beampipe.nodes.asapo.sink import AsapoSink
from beampipe.nodes.asapo.source import AsapoSource

FAKES = Path(__file__).parent / "fakes"
TOKEN = "test-token-for-bt1"
BEAMTIME = "bt1"


class Fake:
    """A running fake broker and in-process fake clients for it."""

    def __init__(self, endpoint: str) -> None:
        import asapo_fake.asapo_consumer as consumer
        import asapo_fake.asapo_producer as producer
        from asapo_fake.connection import Connection

        self.endpoint = endpoint
        self.consumer_api = consumer
        self.producer_api = producer
        credentials = {"beamtime": BEAMTIME, "data_source": "", "token": TOKEN}
        self.connection = Connection(endpoint, credentials)

    def produce(
        self,
        stream: str,
        items: list[tuple[int, Any, dict[str, Any] | None]],
        data_source: str = "det",
        finish: tuple[int, str | None] | None = None,
        stream_meta: dict[str, Any] | None = None,
        dataset: int = 0,
    ) -> None:
        """Send ``(id, data, meta)`` items (``dataset`` > 0: items are ``(id, k, data,
        meta)`` substreams of that many), then the finished flag ``(last_id, next_stream)``."""
        errors: list[Any] = []
        producer = self.producer_api.create_producer(
            self.endpoint, "processed", BEAMTIME, "auto", data_source, TOKEN, 1, 5000
        )

        def callback(info: dict[str, Any], err: Exception | None) -> None:
            if err is not None:
                errors.append((info, err))

        if stream_meta is not None:
            producer.send_stream_meta(stream_meta, stream=stream, callback=callback)
        for item in items:
            if dataset:
                i, k, data, meta = item
                path, parts = f"processed/{stream}/{i}_{k}", (k, dataset)
            else:
                i, data, meta = item
                path, parts = f"processed/{stream}/{i}", None
            producer.send(
                i, path, data, user_meta=meta, dataset=parts, stream=stream, callback=callback
            )
        if finish is not None:
            producer.send_stream_finished_flag(stream, finish[0], finish[1], callback=callback)
        producer.wait_requests_finished(5000)
        assert not errors

    def consumer(self, data_source: str, token: str = TOKEN, timeout_ms: int = 5000) -> Any:
        return self.consumer_api.create_consumer(
            self.endpoint, "auto", False, BEAMTIME, data_source, token, timeout_ms
        )

    def read(self, data_source: str, stream: str) -> list[tuple[int, Any, dict[str, Any]]]:
        """Every message of a finished stream, in a new group: (id, decoded data, meta)."""
        consumer = self.consumer(data_source)
        group = consumer.generate_group_id()
        out = []
        while True:
            try:
                data, meta = consumer.get_next(group, meta_only=False, stream=stream)
            except self.consumer_api.AsapoStreamFinishedError:
                return sorted(out, key=lambda m: m[0])
            out.append((meta["_id"], decode(data, meta["meta"]), meta["meta"]))

    def inspect(self) -> dict[str, Any]:
        """The fake broker's record of deliveries, acknowledgements and negative ones."""
        return self.connection.call("inspect", 5000)


@pytest.fixture
def broker(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Fake]]:
    """Starts fake brokers (``broker(quorum=1)``), with the fake clients selected for this
    process and the node processes, and the token in ``folder/token.txt``."""
    (folder / "token.txt").write_text(TOKEN + "\n")
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.setenv("BEAMPIPE_ASAPO_CLIENT", "asapo_fake")
    path = [str(FAKES), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    shutil.copy(NODES / "asapo_nodes.py", folder)
    sys.modules.pop("asapo_nodes", None)
    started: list[subprocess.Popen[str]] = []

    def start(quorum: int = 1) -> Fake:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "asapo_fake.broker", "--beamtime", BEAMTIME),
                *("--token-file", str(folder / "token.txt"), "--quorum", str(quorum)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        return Fake(proc.stdout.readline().split()[1])

    yield start
    for proc in started:
        proc.kill()
        proc.wait(10)


def source(at: str, **params: Any) -> str:
    """The ``params`` (flow style) of an asapo_source at endpoint ``at``, data source ``det``."""
    base = {"endpoint": at, "beamtime": BEAMTIME, "data_source": "det"}
    base["token_file"] = "token.txt"
    return _flow({**base, **params})


def sink(at: str, **params: Any) -> str:
    """The ``params`` of an asapo_sink at endpoint ``at``, data source ``processed``."""
    base = {"endpoint": at, "beamtime": BEAMTIME, "data_source": "processed"}
    base["token_file"] = "token.txt"
    return _flow({**base, **params})


def _flow(params: dict[str, Any]) -> str:
    return json.dumps(params)


def frame(i: int) -> np.ndarray:
    return (np.arange(20, dtype=np.uint16).reshape(4, 5) + 100 * i).astype(np.uint16)


def frames(ids: range) -> list[tuple[int, Any, dict[str, Any]]]:
    return [(i, frame(i), {"dtype": "<u2", "shape": [4, 5], "frame": i - 1}) for i in ids]


# -- the data path -------------------------------------------------------------------------------


def test_frames_go_through_source_worker_and_sink(folder: Path, broker: Callable[..., Fake]):
    fake = broker()
    fake.produce("scan1", frames(range(1, 41)), finish=(40, None), stream_meta={"sample": "Fe"})
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {source(fake.endpoint, group_id="g1")}}}
  scale: {{use: asapo_nodes:Scale}}
  out: {{use: asapo_sink, params: {sink(fake.endpoint)}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> scale
  - scale.out -> out.in
  - scale.out -> keep.in
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors

    kept = {r["id"]: r for r in rows(folder / "kept.jsonl")}
    assert sorted(kept) == list(range(1, 41))
    for i, r in kept.items():
        assert r["stream"] == "scan1" and r["meta"] == {"frame": i - 1}
        image = r["data"]["image"]
        assert (image["dtype"], image["shape"]) == ("<f4", [4, 5])
        np.testing.assert_array_equal(image["values"], (frame(i) * 2.0 + 1).ravel())

    out = fake.read("processed", "scan1")
    assert [i for i, _, _ in out] == list(range(1, 41))
    for i, data, meta in out:
        assert data.dtype == np.float32 and data.shape == (4, 5)
        np.testing.assert_array_equal(data, frame(i).astype(np.float32) * 2 + 1)
        assert meta == {"frame": i - 1, "dtype": "<f4", "shape": [4, 5], "data_name": "image"}
    consumer = fake.consumer("processed")
    info = consumer.get_stream_info("scan1")
    assert (info["finished"], info["lastId"], info["nextStream"]) == (True, 40, "")
    header = consumer.get_stream_meta("scan1")
    assert header["sample"] == "Fe"
    assert header["asapo"] == {"beamtime": BEAMTIME, "data_source": "det", "stream": "scan1"}

    group = fake.inspect()["det/scan1/g1"]
    assert group["acked"] == list(range(1, 41)) and group["nacks"] == []
    assert sorted(i for i, _ in group["log"]) == list(range(1, 41))


def test_message_metadata_and_bytes_data(folder: Path, broker: Callable[..., Fake]):
    """Without dtype/shape the data is bytes; user meta comes through with the ASAP::O name."""
    fake = broker()
    fake.produce("s", [(1, b"\x00\x01raw", {"kind": "cbf"}), (2, b"", None)], finish=(2, None))
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {source(fake.endpoint, data_name="blob")}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> keep
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors
    first, second = rows(folder / "kept.jsonl")
    assert first["data"] == {"blob": {"bytes": b"\x00\x01raw".hex()}}
    assert first["meta"]["kind"] == "cbf" and first["meta"]["asapo"]["name"] == "processed/s/1"
    assert isinstance(first["meta"]["asapo"]["timestamp"], int)
    assert second["data"] == {"blob": {"bytes": ""}}


def test_finished_streams_are_followed_through_next_stream(
    folder: Path, broker: Callable[..., Fake]
):
    fake = broker()
    fake.produce("scan1", frames(range(1, 6)), finish=(5, "scan2"))
    fake.produce("scan2", frames(range(1, 4)), finish=(3, None))
    fake.produce("later", frames(range(1, 3)), finish=(2, None))  # not named by scan2
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {source(fake.endpoint)}}}
  scale: {{use: asapo_nodes:Scale}}
  out: {{use: asapo_sink, params: {sink(fake.endpoint)}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> scale
  - scale.out -> out.in
  - scale.out -> keep.in
"""
    result, recorder = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors
    kept = [(r["stream"], r["id"]) for r in rows(folder / "kept.jsonl")]
    assert kept == [("scan1", i) for i in range(1, 6)] + [("scan2", i) for i in range(1, 4)]
    ends = {
        stream: r["messages"]
        for node, _, r in recorder.stream_ends
        if node == "src"
        for stream in [r["stream"]]
    }
    assert ends == {"scan1": 5, "scan2": 3}

    consumer = fake.consumer("processed")
    chain = {
        s["name"]: (s["finished"], s["lastId"], s["nextStream"]) for s in consumer.get_stream_list()
    }
    assert chain == {"scan1": (True, 5, "scan2"), "scan2": (True, 3, "")}


def test_follow_stream_list_reads_new_streams_until_idle(folder: Path, broker: Callable[..., Fake]):
    fake = broker()
    fake.produce("a", frames(range(1, 3)), finish=(2, None))
    fake.produce("b", frames(range(1, 4)), finish=(3, None))
    params = source(fake.endpoint, stream="a", follow="stream_list", idle_timeout=0.3)
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {params}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> keep
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors
    kept = [(r["stream"], r["id"]) for r in rows(folder / "kept.jsonl")]
    assert kept == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3)]


def test_two_replicas_share_one_consumer_group(folder: Path, broker: Callable[..., Fake]):
    """The broker holds the group's first delivery until both replicas have asked, so both
    take part; every message reaches the sink exactly once."""
    fake = broker(quorum=2)
    fake.produce("scan1", frames(range(1, 201)), finish=(200, None))
    text = f"""\
nodes:
  src: {{use: asapo_source, replicas: 2, params: {source(fake.endpoint, group_id="shared")}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> keep
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors
    kept = sorted(r["id"] for r in rows(folder / "kept.jsonl"))
    assert kept == list(range(1, 201))
    group = fake.inspect()["det/scan1/shared"]
    assert sorted(i for i, _ in group["log"]) == list(range(1, 201))  # each delivered once
    assert len({consumer for _, consumer in group["log"]}) == 2
    assert group["acked"] == list(range(1, 201))


def test_replicas_need_a_group_id(folder: Path, broker: Callable[..., Fake]):
    fake = broker(quorum=1)
    fake.produce("scan1", frames(range(1, 3)), finish=(2, None))
    text = f"""\
nodes:
  src: {{use: asapo_source, replicas: 2, params: {source(fake.endpoint)}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> keep
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 1
    assert "set group_id when the node runs as several replicas" in result.errors[0]


# -- acknowledgements ----------------------------------------------------------------------------


def test_a_failing_worker_under_skip_is_dead_lettered_with_the_asapo_stream_and_id(
    folder: Path, broker: Callable[..., Fake]
):
    """The source acknowledges a message once it is handed on, so a worker failure further
    down is not resent by ASAP::O: the dead-letter file names its ASAP::O stream and id."""
    fake = broker()
    fake.produce("scan1", frames(range(1, 21)), finish=(20, None))
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {source(fake.endpoint, group_id="g")}}}
  work: {{use: flownodes:Flaky, params: {{every: 5}}, on_error: skip}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> work
  - work.out -> keep.in
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors
    dead = rows(folder / "pipeline.dead-letters.jsonl")
    assert [(d["stream"], d["id"]) for d in dead] == [("scan1", i) for i in (5, 10, 15, 20)]
    assert all(d["error"] == f"ValueError: bad point {d['id']}" for d in dead)
    assert dead[0]["metadata"]["asapo"]["name"] == "processed/scan1/5"
    kept = [r["id"] for r in rows(folder / "kept.jsonl")]
    assert kept == [i for i in range(1, 21) if i % 5]
    group = fake.inspect()["det/scan1/g"]
    assert group["acked"] == list(range(1, 21)) and group["nacks"] == []


def test_undecodable_data_is_negatively_acknowledged_and_resent(
    folder: Path, broker: Callable[..., Fake]
):
    fake = broker()
    items = frames(range(1, 6))
    items[2] = (3, frame(3)[:3], {"dtype": "<u2", "shape": [4, 5], "frame": 2})  # 30 of 40 B
    fake.produce("s", items)  # not finished: the consumer below waits for the resend
    params = source(fake.endpoint, stream="s", group_id="g", resend_delay=0.2)
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {params}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> keep
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 1
    (error,) = result.errors
    assert (
        "asapo_source 'src': stream 's', message id 3: the data has 30 bytes, but dtype " in error
    )
    assert "'<u2' and shape [4, 5] need 40 (check the producer's 'dtype'/'shape' meta" in error
    assert "negatively acknowledged and stays in ASAP::O" in error
    group = fake.inspect()["det/s/g"]
    assert (group["acked"], group["nacks"]) == ([1, 2], [3])

    consumer = fake.consumer("det")  # the group goes on: message 3 comes again
    got = []
    for _ in range(3):
        msg_id = consumer.get_next("g", stream="s")[1]["_id"]
        consumer.acknowledge("g", msg_id, stream="s")
        got.append(msg_id)
    assert sorted(got) == [3, 4, 5]


def test_a_message_not_handed_on_is_negatively_acknowledged_at_close(
    folder: Path, broker: Callable[..., Fake]
):
    fake = broker()
    fake.produce("s", frames(range(1, 4)), finish=(3, None))
    params = AsapoSource.Params(
        endpoint=fake.endpoint,
        beamtime=BEAMTIME,
        data_source="det",
        token_file=str(folder / "token.txt"),
        group_id="g",
    )
    src = AsapoSource(params, "src")
    items = src.generate()
    assert next(items).stream == "s"  # StreamStart
    assert next(items).id == 1
    src.close()  # the node stops before message 1 was handed on
    items.close()
    group = fake.inspect()["det/s/g"]
    assert (group["acked"], group["nacks"]) == ([], [1])
    consumer = fake.consumer("det")
    assert consumer.get_next("g", stream="s")[1]["_id"] == 1  # the group gets it again


# -- datasets ------------------------------------------------------------------------------------


def module(i: int, k: int) -> np.ndarray:
    return np.full((2, 3), 10 * i + k, dtype=np.int32)


def test_dataset_substreams_form_one_message_and_partial_ones_are_flagged(
    folder: Path, broker: Callable[..., Fake]
):
    fake = broker()
    parts = [
        (i, k, module(i, k), {"dtype": "<i4", "shape": [2, 3], "module": k})
        for i in range(1, 5)
        for k in (3, 1, 2)  # substreams arrive in any order
        if (i, k) != (3, 2)  # dataset 3 lacks module 2
    ]
    fake.produce("scan1", parts, dataset=3, finish=(4, None))
    params = source(fake.endpoint, dataset=True, data_name="module", group_id="g")
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {params}}}
  pass: {{use: asapo_nodes:Pass}}
  out: {{use: asapo_sink, params: {sink(fake.endpoint, data_source="assembled")}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> pass
  - pass.out -> out.in
  - pass.out -> keep.in
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors
    kept = {r["id"]: r for r in rows(folder / "kept.jsonl")}
    assert sorted(kept) == [1, 2, 3, 4]
    for i, r in kept.items():
        present = [1, 3] if i == 3 else [1, 2, 3]
        assert sorted(r["data"]) == [f"module_{k}" for k in present]
        for k in present:
            np.testing.assert_array_equal(r["data"][f"module_{k}"]["values"], module(i, k).ravel())
        dataset = r["meta"]["dataset"]
        assert (dataset["expected_size"], dataset["received"]) == (3, present)
        assert (dataset["missing"], dataset["partial"]) == (([2], True) if i == 3 else ([], False))
        assert dataset["substreams"]["1"]["module"] == 1
    assert fake.inspect()["det/scan1/g"]["acked"] == [1, 2, 3, 4]

    consumer = fake.consumer("assembled")  # the sink sent each message as a dataset again
    full = consumer.get_dataset_by_id(2, stream="scan1")
    assert full["expected_size"] == 3
    for meta in full["content"]:
        k = meta["dataset_substream"]
        assert meta["meta"]["data_name"] == f"module_{k}"
        np.testing.assert_array_equal(
            decode(consumer.retrieve_data(meta), meta["meta"]), module(2, k)
        )
    assert consumer.get_dataset_by_id(3, stream="scan1")["expected_size"] == 2


def test_a_partial_dataset_stops_the_run_under_partial_fail(
    folder: Path, broker: Callable[..., Fake]
):
    fake = broker()
    fake.produce("scan1", [(1, 1, b"a", None), (1, 2, b"b", None)], dataset=3, finish=(1, None))
    params = source(fake.endpoint, dataset=True, partial="fail", group_id="g")
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {params}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> keep
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 1
    assert (
        "asapo_source 'src': stream 'scan1', message id 1: partial dataset, substreams [1, 2] "
        "of 3 (missing [3]; partial: fail)" in result.errors[0]
    )
    assert fake.inspect()["det/scan1/g"]["nacks"] == [1]


# -- the sink's failures -------------------------------------------------------------------------


def test_a_message_asapo_refuses_is_reported_by_stream_and_id(
    folder: Path, broker: Callable[..., Fake]
):
    """The output already holds id 3 under another path: with ``confirm: message`` and
    ``on_error: skip`` exactly that message goes to the dead-letter file."""
    fake = broker()
    fake.produce("scan1", frames(range(1, 6)), finish=(5, None))
    fake.produce("scan1", [(3, b"older", None)], data_source="processed")
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {source(fake.endpoint)}}}
  scale: {{use: asapo_nodes:Scale}}
  out: {{use: asapo_sink, on_error: skip, params: {sink(fake.endpoint, confirm="message")}}}
connections:
  - src -> scale
  - scale.out -> out.in
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors
    (dead,) = rows(folder / "pipeline.dead-letters.jsonl")
    assert (dead["node"], dead["stream"], dead["id"]) == ("out", "scan1", 3)
    assert dead["error"].startswith(
        "AsapoError: asapo_sink 'out': ASAP::O did not accept 1 request(s): stream 'scan1', "
        "message id 3: AsapoWrongInputError: error: wrong input, details: already have record"
    )
    out = fake.read("processed", "scan1")
    assert [i for i, _, _ in out] == [1, 2, 3, 4, 5]
    assert out[2][1] == b"older"


def test_a_sink_with_a_bad_token_names_every_message_and_the_token(
    folder: Path, broker: Callable[..., Fake]
):
    fake = broker()
    fake.produce("scan1", frames(range(1, 4)), finish=(3, None))
    (folder / "bad.txt").write_text("not-the-token")
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {source(fake.endpoint)}}}
  scale: {{use: asapo_nodes:Scale}}
  out: {{use: asapo_sink, params: {sink(fake.endpoint, token_file="bad.txt")}}}
connections:
  - src -> scale
  - scale.out -> out.in
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 1
    (error,) = result.errors
    assert "node 'out', stream 'scan1'" in error
    assert (
        "asapo_sink 'out': ASAP::O did not accept 4 request(s): stream 'scan1', stream metadata: "
        "AsapoWrongInputError" in error
    )
    assert "; stream 'scan1', message id 1: AsapoWrongInputError" in error
    assert "message id 3: AsapoWrongInputError" in error
    assert f"check the token (token_file '{folder / 'bad.txt'}'), the beamtime 'bt1'" in error
    assert "not-the-token" not in error


# -- connection errors ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("token", "AsapoWrongInputError: error: wrong input, details: authorization failed"),
        ("endpoint", "AsapoUnavailableServiceError: error: service unavailable"),
        ("data_source", "beamtime 'bt1' has no data source 'nope' (after waiting 0 s,"),
        ("token_env", "the environment variable 'BP_TEST_UNSET_TOKEN' (token_env) is not set"),
    ],
)
def test_connection_problems_give_a_clear_error(
    folder: Path, broker: Callable[..., Fake], case: str, expected: str
):
    fake = broker()
    fake.produce("scan1", frames(range(1, 3)), finish=(2, None))
    (folder / "bad.txt").write_text("wrong-token")
    down = f"127.0.0.1:{free_port()}"
    params = {
        "token": {"token_file": "bad.txt"},
        "endpoint": {"endpoint": down, "timeout": 0.3},
        "data_source": {"data_source": "nope", "start_timeout": 0},
        "token_env": {"token_file": None, "token_env": "BP_TEST_UNSET_TOKEN"},
    }[case]
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {source(fake.endpoint, **params)}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> keep
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 1
    (error,) = result.errors
    assert error.startswith("node 'src': AsapoError: asapo_source 'src': ")
    assert expected in error
    hints = {
        "token": f"check the token (token_file '{folder / 'bad.txt'}'), the beamtime 'bt1' "
        "and the data source 'det'",
        "endpoint": f"check that the endpoint '{down}' is right and that the "
        "ASAP::O services run there",
        "data_source": "its data sources: 'det'",
        "token_env": "export the beamtime's ASAP::O token in it before the run",
    }
    assert hints[case] in error
    assert "wrong-token" not in error


def test_params_need_exactly_one_token_source_and_never_the_token() -> None:
    base = {"endpoint": "host:8400", "beamtime": "bt", "data_source": "det"}
    with pytest.raises(ValueError, match="give exactly one of token_file"):
        AsapoSource.Params(**base)
    with pytest.raises(ValueError, match="give exactly one of token_file"):
        AsapoSink.Params(**base, token_file="t", token_env="T")
    with pytest.raises(ValueError, match="looks like a token itself"):
        AsapoSource.Params(**base, token_env="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJidCJ9.c2lnbmF0dXJl")
    with pytest.raises(ValueError, match="exposed_path must start with 'raw/'"):
        AsapoSink.Params(**base, token_env="T", source_type="raw", exposed_path="processed/{id}")
    with pytest.raises(ValueError, match="exposed_path uses 'scan'"):
        AsapoSink.Params(**base, token_env="T", exposed_path="processed/{scan}")


def test_source_replicas_are_allowed_for_shared_groups_only(folder: Path) -> None:
    from beampipe.config import load_pipeline

    (folder / "token.txt").write_text(TOKEN)
    path = folder / "pipeline.yaml"
    path.write_text(
        f"""\
nodes:
  src: {{use: asapo_source, replicas: 3, params: {source("host:8400", group_id="g")}}}
  sim: {{use: detector_sim, replicas: 2}}
  out: {{use: asapo_sink, params: {sink("host:8400")}}}
connections:
  - src -> out
  - sim -> out
"""
    )
    with pytest.raises(Exception) as info:
        load_pipeline(path)
    text = str(info.value)
    assert "detector_sim is a source" in text
    assert "asapo_source" not in text


def test_a_missing_client_module_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEAMPIPE_ASAPO_CLIENT", "no_such_asapo_package")
    params = AsapoSource.Params(
        endpoint="host:8400", beamtime="bt", data_source="det", token_env="T"
    )
    with pytest.raises(AsapoError, match=r"no_such_asapo_package\.asapo_consumer"):
        next(AsapoSource(params, "src").generate())
    monkeypatch.delenv("BEAMPIPE_ASAPO_CLIENT")
    monkeypatch.setitem(sys.modules, "asapo_producer", None)  # as if the wheel were missing
    with pytest.raises(AsapoError, match=r"pip install 'beampipe\[asapo\]'"):
        AsapoSink(AsapoSink.Params(endpoint="h:1", beamtime="b", data_source="d", token_env="T"))


# -- the real client wheels, against an endpoint where nothing runs ------------------------------


@pytest.fixture
def real_client(folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The official wheels selected (skipped without them) and an endpoint where nothing
    runs. The nodes use them in their own processes: the real producer leaves a thread
    behind that retries the discovery service for as long as its process lives."""
    pytest.importorskip("asapo_consumer")
    pytest.importorskip("asapo_producer")
    monkeypatch.delenv("BEAMPIPE_ASAPO_CLIENT", raising=False)
    monkeypatch.setenv("BP_TEST_TOKEN", "not-checked")
    shutil.copy(NODES / "asapo_nodes.py", folder)
    sys.modules.pop("asapo_nodes", None)
    return f"127.0.0.1:{free_port()}"


def test_the_real_consumer_reports_an_unreachable_endpoint(folder: Path, real_client: str):
    params = source(real_client, token_file=None, token_env="BP_TEST_TOKEN", timeout=0.2)
    text = f"""\
nodes:
  src: {{use: asapo_source, params: {params}}}
  keep: {{use: asapo_nodes:Keep, params: {{path: kept.jsonl}}}}
connections:
  - src -> keep
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 1
    (error,) = result.errors
    assert error.startswith(
        "node 'src': AsapoError: asapo_source 'src': creating a consumer group: "
        "AsapoUnavailableServiceError: error: service unavailable"
    )
    assert f"check that the endpoint '{real_client}' is right" in error


def test_the_real_producer_reports_each_message_it_could_not_send(folder: Path, real_client: str):
    params = sink(real_client, token_file=None, token_env="BP_TEST_TOKEN", timeout=0.3)
    text = f"""\
nodes:
  src: {{use: flownodes:Counter, params: {{n: 3}}}}
  out: {{use: asapo_sink, params: {params}}}
connections:
  - src -> out
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 1
    (error,) = result.errors
    assert error.startswith(
        "node 'out', stream 's0': AsapoError: asapo_sink 'out': ASAP::O did not accept 4 "
        "request(s): stream 's0', stream metadata: AsapoTimeOutError"
    )
    for i in (1, 2, 3):
        assert f"; stream 's0', message id {i}: AsapoTimeOutError" in error
    assert f"check that the endpoint '{real_client}' is right" in error


# -- the example ---------------------------------------------------------------------------------


def test_the_example_runs_against_the_fake(
    folder: Path, broker: Callable[..., Fake], monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/asapo as its README runs it without ASAP::O: frames from produce_frames.py,
    sums into NeXus and back into the fake; every sum is compared with numpy's."""
    fake = broker()
    monkeypatch.setenv("ASAPO_TOKEN", TOKEN)
    example = Path(__file__).resolve().parents[1] / "examples" / "asapo"
    args = ["--endpoint", fake.endpoint, "--beamtime", BEAMTIME, "--frames", "12"]
    produced = subprocess.run(
        [sys.executable, str(example / "produce_frames.py"), *args, "--shape", "16", "24"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr
    overrides = [f"{node}.{key}" for node in ("frames", "sums") for key in ("endpoint", "beamtime")]
    values = [fake.endpoint, BEAMTIME] * 2
    sets = [x for o, v in zip(overrides, values, strict=True) for x in ("--set", f"{o}={v}")]
    done = beampipe("run", str(example / "pipeline.yaml"), *sets, cwd=folder, timeout=120)
    assert done.returncode == 0, done.stderr

    with h5py.File(folder / "out" / "asapo-sum.nxs", "r") as f:
        written = {f[e]["entry_identifier"][()].decode(): f[e]["total"]["image"][()] for e in f}
    assert sorted(written) == ["scan_0001", "scan_0002"]
    for stream in written:
        frames_in = fake.read("detector", stream)
        assert [i for i, _, _ in frames_in] == list(range(1, 13))
        total = np.sum([data.astype(np.float64) for _, data, _ in frames_in], axis=0)
        np.testing.assert_array_equal(written[stream], total)
        sums = fake.read("detector-sums", stream)
        assert [i for i, _, _ in sums] == [10, 12]  # every 10 frames and at the end
        np.testing.assert_array_equal(sums[-1][1], total)
