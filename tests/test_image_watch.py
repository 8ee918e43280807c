"""``image_files`` in watch mode (``follow: true``): files read as a writer process writes them
slowly and in pieces, a growing HDF5 file read through SWMR, stream ends, dead letters, and a
source killed with SIGKILL and restarted mid-folder (issue 17).

Every frame is compared with the frame the writer wrote (the same seed), so a frame read
half-written would not pass."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import fabio
import h5py
import numpy as np
from conftest import NODES, REPO, beampipe, run_pipeline
from fabio.cbfimage import CbfImage

import beampipe as bp
from beampipe.nodes.images.journal import Journal
from beampipe.nodes.images.source import ImageFiles
from beampipe.testing import run

SHAPE = (24, 20)


def frame(k: int) -> np.ndarray:
    """The k-th frame the writers write."""
    return np.random.default_rng(k).poisson(40, size=SHAPE).astype(np.int32)


CBF_WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from fabio.cbfimage import CbfImage
folder, scan, first, n, pause = Path(sys.argv[1]), sys.argv[2], *map(float, sys.argv[3:6])
for k in range(int(first), int(first + n)):
    data = np.random.default_rng(k).poisson(40, size=SHAPE).astype(np.int32)
    tmp = folder / f".{scan}.tmp"
    CbfImage(data=data).write(str(tmp))
    raw = tmp.read_bytes()
    tmp.unlink()
    with open(folder / f"{scan}_{k:05d}.cbf", "wb") as f:  # in pieces, as a detector writes
        for piece in range(4):
            f.write(raw[piece * len(raw) // 4 : (piece + 1) * len(raw) // 4])
            f.flush()
            time.sleep(pause / 4)
    time.sleep(pause)
(folder / f"{scan}.done").touch()
""".replace("SHAPE", repr(SHAPE))

SWMR_WRITER = """
import os, sys, time
import h5py, hdf5plugin, numpy as np
path, n = sys.argv[1], int(sys.argv[2])
with h5py.File(path, "w", libver="latest") as f:
    entry = f.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    ds = entry.create_dataset("data/data", shape=(0, *SHAPE), maxshape=(None, *SHAPE),
                              dtype="int32", chunks=(1, *SHAPE), **hdf5plugin.Bitshuffle())
    entry["data"].attrs.update({"NX_class": "NXdata", "signal": "data"})
    f.swmr_mode = True
    for k in range(n):
        ds.resize(k + 1, axis=0)
        ds[k] = np.random.default_rng(k).poisson(40, size=SHAPE).astype(np.int32)
        ds.flush()
        time.sleep(0.05)
    # keep the file open until the pipeline has had all frames but the last (flag file)
    deadline = time.monotonic() + 120
    while not os.path.exists(sys.argv[3]):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.05)
""".replace("SHAPE", repr(SHAPE))


def writer(script: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)])


def pipeline(params: str, restart: str = "never", more: str = "") -> str:
    """image_files (``params``) -> Capture sink; ``more``: a node ``flag`` fed by the source."""
    text = textwrap.dedent(
        f"""\
        nodes:
          frames:
            use: image_files
            restart: {restart}
            restart_delay: 0.1
            params: {params}
          sink:
            use: capture:Capture
            params: {{path: got.pickle}}
        connections:
          - frames -> sink.in
        """
    )
    if more:
        text = text.replace(
            "connections:\n", f"  flag: {more}\nconnections:\n  - frames -> flag.in\n"
        )
    return text


def captured(folder: Path) -> tuple[list[tuple], list[str]]:
    from capture import load

    got = load(folder / "got.pickle")
    return [i for i in got if i[0] == "msg"], [i[1] for i in got if i[0] == "end"]


def test_files_written_slowly_in_pieces_each_frame_once_in_order_none_half_written(folder):
    shutil.copy(NODES / "capture.py", folder)
    incoming = folder / "incoming"
    incoming.mkdir()
    a = writer(CBF_WRITER, incoming, "scanA", 1, 8, 0.08)
    b = writer(CBF_WRITER, incoming, "scanB", 1, 5, 0.12)
    try:
        result, _ = run_pipeline(
            folder,
            pipeline(
                "{paths: incoming/*.cbf, follow: true, stream_by: '{scan}_{frame:05d}.cbf', "
                "end_marker: '{scan}.done', settle: 0.5, poll: 0.05, idle_timeout: 3}"
            ),
        )
    finally:
        assert a.wait(timeout=120) == 0 and b.wait(timeout=120) == 0
    assert result.exit_code == 0, result.errors
    msgs, ends = captured(folder)
    for scan, n in (("scanA", 8), ("scanB", 5)):
        mine = [m for m in msgs if m[1] == scan]
        assert [m[2] for m in mine] == list(range(1, n + 1))  # each once, in order
        for k, m in enumerate(mine, start=1):
            assert Path(m[4]["file"]).name == f"{scan}_{k:05d}.cbf"
            np.testing.assert_array_equal(m[5]["image"], frame(k))
            np.testing.assert_array_equal(m[5]["image"], fabio.open(m[4]["file"]).data)
    assert sorted(ends) == ["scanA", "scanB"]
    assert result.metrics["frames"].dropped == 0


def test_a_growing_hdf5_file_is_read_through_swmr_while_written(folder):
    """The writer keeps the file open after its 30th frame until a second sink has received
    29 frames: so they were read while the file was being written (SWMR); then it closes it
    and the last frame follows."""
    shutil.copy(NODES / "capture.py", folder)
    incoming = folder / "incoming"
    incoming.mkdir()
    w = writer(SWMR_WRITER, incoming / "series_1.h5", 30, folder / "had29")
    try:
        result, _ = run_pipeline(
            folder,
            pipeline(
                "{paths: incoming/*.h5, follow: true, settle: 0.5, poll: 0.05, idle_timeout: 3}",
                more="{use: flownodes:Collect, "
                "params: {path: c.jsonl, flag: had29, flag_after: 29}}",
            ),
        )
    finally:
        assert w.wait(timeout=180) == 0  # 3: the 29 frames never came while it was open
    assert result.exit_code == 0, result.errors
    msgs, ends = captured(folder)
    assert [m[2] for m in msgs] == list(range(1, 31))
    for k, m in enumerate(msgs):
        assert m[4]["file_frame"] == k
        np.testing.assert_array_equal(m[5]["image"], frame(k))
    assert ends == ["series_1"]


def test_unreadable_and_truncated_files_are_dead_letters_and_the_rest_go_on(folder):
    shutil.copy(NODES / "capture.py", folder)
    incoming = folder / "incoming"
    incoming.mkdir()
    for k in (1, 2, 4):
        CbfImage(data=frame(k)).write(str(incoming / f"s_{k:05d}.cbf"))
    raw = (incoming / "s_00002.cbf").read_bytes()
    (incoming / "s_00003.cbf").write_bytes(raw[: len(raw) // 3])  # truncated
    (incoming / "s_00005.cbf").write_bytes(b"garbage")
    result, _ = run_pipeline(
        folder,
        pipeline(
            "{paths: incoming/*.cbf, follow: true, stream_by: '{scan}_{frame:05d}.cbf', "
            "settle: 0.2, poll: 0.05, idle_timeout: 1.5}"
        ),
    )
    assert result.exit_code == 0, result.errors
    msgs, _ = captured(folder)
    assert [(m[2], Path(m[4]["file"]).name) for m in msgs] == [
        (1, "s_00001.cbf"),
        (2, "s_00002.cbf"),
        (3, "s_00004.cbf"),
    ]
    np.testing.assert_array_equal(msgs[2][5]["image"], frame(4))
    lines = [
        json.loads(x) for x in (folder / "pipeline.dead-letters.jsonl").read_text().splitlines()
    ]
    named = {Path(x["metadata"]["file"]).name: x["error"] for x in lines if x["node"] == "frames"}
    assert set(named) == {"s_00003.cbf", "s_00005.cbf"}
    assert "without a binary section" in named["s_00003.cbf"]
    assert result.metrics["frames"].dropped == 2


def test_killed_source_restarted_mid_folder_sends_nothing_twice_and_loses_nothing(
    folder, monkeypatch
):
    """The source is SIGKILLed after sending 18 frames while the writer is still writing;
    restarted, it resumes from its journal: every frame reaches the sink exactly once."""
    shutil.copy(NODES / "capture.py", folder)
    incoming = folder / "incoming"
    incoming.mkdir()
    for k in range(1, 11):
        CbfImage(data=frame(k)).write(str(incoming / f"run_{k:05d}.cbf"))
    faults = [{"node": "frames", "fault": "kill", "after": 18}]
    monkeypatch.setenv("BEAMPIPE_FAULTS", json.dumps(faults))
    w = writer(CBF_WRITER, incoming, "run", 11, 20, 0.05)
    try:
        result, recorder = run_pipeline(
            folder,
            pipeline(
                "{paths: incoming/*.cbf, follow: true, stream_by: '{scan}_{frame:05d}.cbf', "
                "end_marker: '{scan}.done', frames: 30, settle: 0.3, poll: 0.05, idle_timeout: 2}",
                restart="on-failure",
            ),
        )
    finally:
        assert w.wait(timeout=120) == 0
    assert result.exit_code == 0, result.errors
    assert result.metrics["frames"].restarts == 1
    assert any("SIGKILL" in f for f in recorder.failures)
    msgs, ends = captured(folder)
    assert [m[2] for m in msgs] == list(range(1, 31))  # each id once at the sink, in order
    for k, m in enumerate(msgs, start=1):
        assert Path(m[4]["file"]).name == f"run_{k:05d}.cbf"
        np.testing.assert_array_equal(m[5]["image"], frame(k))
    assert ends == ["run"]
    print("duplicates dropped at the sink:", result.metrics["sink"].duplicates)


# -- the journal, in process -------------------------------------------------------------------


def test_a_restarted_source_sends_again_exactly_what_was_not_acknowledged(tmp_path):
    """A predecessor journaled ids 1..4 (files 1..4) and had 1, 2 and 4 acknowledged: its
    successor sends the StreamStart, id 3 again, then 5 and 6 from the files not read yet."""
    for k in range(1, 7):
        CbfImage(data=frame(k)).write(str(tmp_path / f"s_{k:05d}.cbf"))
    state = tmp_path / "frames.0.source"
    journal = Journal(state)
    journal.start(
        "s", {"stream_by": "{scan}_{frame:05d}.cbf", "file": str(tmp_path / "s_00001.cbf")}
    )
    for k in range(1, 5):
        journal.assign("s", k, str(tmp_path / f"s_{k:05d}.cbf"), 0)
    for k in (1, 2, 4):
        journal.acked("s", k)
    journal.flush()
    (tmp_path / "s_00007.cbf").write_bytes(b"unreadable")
    journal.drop(str(tmp_path / "s_00007.cbf"))  # dead-lettered by the predecessor
    node = ImageFiles(
        ImageFiles.Params(
            paths=str(tmp_path / "*.cbf"),
            follow=True,
            stream_by="{scan}_{frame:05d}.cbf",
            settle=0,
            poll=0.01,
            idle_timeout=0.3,
        ),
        name="frames",
    )
    node.state_file = state
    node.restarts = 1
    results = run(node)
    items = results.items()
    assert isinstance(items[0], bp.StreamStart) and items[0].stream == "s"
    msgs = [i for i in items if isinstance(i, bp.Message)]
    assert [(m.id, Path(m.metadata["file"]).name) for m in msgs] == [
        (3, "s_00003.cbf"),
        (5, "s_00005.cbf"),
        (6, "s_00006.cbf"),
    ]
    for m in msgs:
        np.testing.assert_array_equal(m.data["image"], frame(int(m.metadata["file"][-9:-4])))
    ends = [i for i in items if isinstance(i, bp.EndOfStream)]
    assert [(e.stream, e.last_id) for e in ends] == [("s", 6)]
    assert results.dead_letters == []  # ids 1, 2, 4 were not reported missing
    assert Journal(state).streams["s"].acked == set(range(1, 7))
    assert Journal(state).streams["s"].ended == 6


# -- the example -------------------------------------------------------------------------------


def test_example_watches_the_detector_and_the_sum_equals_numpy(tmp_path):
    example = tmp_path / "image-watch"
    shutil.copytree(REPO / "examples" / "image-watch", example)
    detector = subprocess.Popen(
        [sys.executable, str(example / "detector.py"), "--frames", "8", "--period", "0.1"]
    )
    try:
        done = beampipe(
            "run", str(example / "pipeline.yaml"), "--set", "frames.idle_timeout=3", cwd=tmp_path
        )
    finally:
        assert detector.wait(timeout=120) == 0
    assert done.returncode == 0, done.stderr
    assert "finished: 1/1 streams, 8 messages" in done.stderr
    files = sorted((example / "incoming").glob("sample_*.cbf"))
    expected = np.stack([fabio.open(str(p)).data for p in files])
    assert len(files) == 8
    with h5py.File(tmp_path / "out" / "image-watch.nxs") as f:
        entry = f["sample"]
        np.testing.assert_array_equal(entry["frames/image"][()], expected)
        np.testing.assert_array_equal(
            entry["sum/image"][()], expected.sum(axis=0, dtype=np.float64)
        )
