"""``nexus_writer`` on a disk that fills up (issue 16): the run fails naming the file and the free
space needed, and what it leaves is honest and readable: every id in a group file names a row
holding that message's data (no zero-filled images), the files open with plain h5py and pass
nxcheck, and a resume that cannot get space leaves no copy behind (docs/nexus.md, "When the
disk is full").

Each test mounts a small tmpfs of its own (root only; skipped elsewhere).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import beampipe, nxcheck

from beampipe import Message
from beampipe.nodes.nexus import files
from beampipe.nodes.nexus.writer import NexusWriter
from beampipe.nodes.sim.detector import DetectorSim

SIM = DetectorSim.Params(shape=(64, 64), frames=2000, pool=8)
"""8 kB frames: 16 MB for the stream, twice the disk."""
FRAMES = DetectorSim(SIM).pooled_frames()
NEEDS = re.compile(r"needs [0-9.]+ [kMG]?B free, [0-9.]+ [kMG]?B free")
"""How the error gives the free space needed and the free space there is."""


@pytest.fixture
def disk(tmp_path: Path):
    """An 8 MB tmpfs mounted at ``tmp_path/disk``, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with a ballast file until nothing is free, then give back ``leave``
    bytes."""
    ballast = disk / "ballast"
    block = b"\xff" * 65536
    with open(ballast, "wb", buffering=0) as f:  # unbuffered: close() has nothing left to write
        try:
            while True:
                f.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(ballast, max(0, ballast.stat().st_size - leave))
    return ballast


def frame(msg_id: int) -> Message:
    return Message(data={"image": FRAMES[(msg_id - 1) % len(FRAMES)]}, stream="s", id=msg_id)


def check_honest(group_file: Path) -> int:
    """The group file opens with plain h5py; its ids are 1..n in order and each row holds that
    frame of the source (so no zero-filled row); n."""
    with h5py.File(group_file, "r") as f:
        group = f["entry"][group_file.stem]
        ids, images = group["id"][()], group["image"]
        assert images.shape[0] == len(ids)  # no row without its id
        assert ids.tolist() == list(range(1, len(ids) + 1))
        for row, msg_id in enumerate(ids):
            image = images[row]
            assert image.any(), f"row {row} (id {msg_id}) is all zeros"
            np.testing.assert_array_equal(image, FRAMES[(msg_id - 1) % len(FRAMES)])
        return len(ids)


def leftovers(disk: Path) -> list[Path]:
    """Temporary files of the writer (``.x.tmp``, ``.x.resume``) left on the disk."""
    return sorted(p for p in disk.rglob(".*") if p.is_file())


PIPELINE = """
name: diskfull
nodes:
  det:
    use: detector_sim
    params: {{shape: [64, 64], frames: 2000, pool: 8}}
  nexus:
    use: nexus_writer
    params: {{path: {path}}}
    restart: {restart}
    restart_delay: 0.1
connections:
  - det.out -> nexus.frames
"""


@pytest.mark.parametrize("restart", ["never", "on-failure"])
def test_a_disk_filling_mid_run_fails_the_run_and_leaves_an_honest_readable_file(
    tmp_path, disk, restart
):
    master = disk / "out.nxs"
    (tmp_path / "pipeline.yaml").write_text(PIPELINE.format(path=master, restart=restart))
    done = beampipe("run", "pipeline.yaml", cwd=tmp_path, timeout=600)
    console = done.stdout + done.stderr
    assert done.returncode == 1, console
    group_file = disk / "out_data" / "series_00001" / "frames.h5"
    rows = check_honest(group_file)
    assert 0 < rows < SIM.frames  # the disk filled mid-run
    with h5py.File(master, "r") as f:
        assert f["series_00001/frames/id"].shape == (rows,)
    assert nxcheck(master)[0] == 0
    assert nxcheck(group_file)[0] == 0
    assert leftovers(disk) == []
    assert f"{group_file}: no space left" in console
    assert NEEDS.search(console), console
    if restart == "on-failure":  # each restarted writer reopened the file and failed the same way
        assert re.search(r"\b3 restarts\b", console), console


def test_a_write_error_the_space_check_misses_is_caught_and_rolled_back(disk, monkeypatch):
    """A quota or another writer that the free-space check cannot see: HDF5's own error at the
    flush is caught, the file is cut back to the rows flushed before and closed."""
    monkeypatch.setattr(files, "ensure_space", lambda *args: None, raising=False)
    w = NexusWriter(NexusWriter.Params(path=str(disk / "out.nxs"), flush_interval=3600))
    w.on_stream_start("s", {})
    error: Exception | None = None
    for msg_id in range(1, SIM.frames + 1):
        msg = frame(msg_id)
        msg.port = "frames"
        try:
            w.process(msg)
            if msg_id % 50 == 0:
                w.checkpoint()
        except Exception as exc:
            error = exc
            break
    assert error is not None
    with pytest.raises(Exception) as again:
        w.checkpoint()  # the failure stays: nothing after it is taken as written
    with pytest.raises(Exception) as closing:
        w.close()
    group_file = disk / "out_data" / "s" / "frames.h5"
    rows = check_honest(group_file)
    assert 0 < rows < msg_id and rows % 50 == 0  # the checkpoints before the failed one
    assert nxcheck(disk / "out.nxs")[0] == 0
    assert nxcheck(group_file)[0] == 0
    for exc in (error, again.value, closing.value):
        assert isinstance(exc, OSError) and f"{group_file}: no space left" in str(exc)
        assert NEEDS.search(str(exc))


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from beampipe import Message
from beampipe.nodes.nexus.writer import NexusWriter
w = NexusWriter(NexusWriter.Params(path=sys.argv[1], flush_interval=3600))
w.on_stream_start("s", {})
for i in range(1, 301):
    w.process(Message(data={"image": np.full((64, 64), i, np.uint16)}, stream="s", id=i,
                      port="frames"))
w.checkpoint()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_resume_without_space_fails_clearly_and_leaves_the_file_as_it_was(disk):
    master = disk / "out.nxs"
    code = textwrap.dedent(KILLED_WRITER)
    killed = subprocess.run([sys.executable, "-c", code, str(master)], timeout=120)
    assert killed.returncode == -9
    group_file = disk / "out_data" / "s" / "frames.h5"
    before = hashlib.sha256(group_file.read_bytes()).hexdigest()
    ballast = fill(disk)
    msg = Message(data={"image": np.zeros((64, 64), np.uint16)}, stream="s", id=301)
    with pytest.raises(OSError) as caught:
        files.GroupFile.resume(group_file, "frames", msg, "append")
    assert f"{group_file}: no space left for copying the file to resume it" in str(caught.value)
    assert NEEDS.search(str(caught.value))
    assert leftovers(disk) == []  # no .frames.h5.resume
    assert hashlib.sha256(group_file.read_bytes()).hexdigest() == before

    ballast.unlink()  # with space, the same file resumes
    group = files.GroupFile.resume(group_file, "frames", msg, "append")
    group.close()
    with h5py.File(group_file, "r") as f:
        ids = f["entry/frames/id"][()]
        assert ids.tolist() == list(range(1, 301))
        assert [int(f["entry/frames/image"][k, 0, 0]) for k in range(300)] == ids.tolist()


def test_a_new_entry_without_space_leaves_the_master_as_it_was(disk):
    master = disk / "out.nxs"
    w = NexusWriter(NexusWriter.Params(path=str(master)))
    w.on_stream_start("s", {})
    msg = frame(1)
    msg.port = "frames"
    w.process(msg)
    w.on_stream_end("s")
    before = hashlib.sha256(master.read_bytes()).hexdigest()
    fill(disk)
    with pytest.raises(OSError) as caught:
        w.on_stream_start("t", {})
    assert f"{master}: no space left" in str(caught.value) and NEEDS.search(str(caught.value))
    assert leftovers(disk) == []  # no .out.nxs.tmp
    assert hashlib.sha256(master.read_bytes()).hexdigest() == before
    w.close()
    check_honest(disk / "out_data" / "s" / "frames.h5")
    assert nxcheck(master)[0] == 0


def test_a_replace_group_that_cannot_be_written_keeps_the_message_shown_before(disk, monkeypatch):
    """Replace mode, the check off as above: each message is a larger spectrum; when one does
    not fit, the group shows the one before, with its id."""
    monkeypatch.setattr(files, "ensure_space", lambda *args: None, raising=False)
    w = NexusWriter(
        NexusWriter.Params(path=str(disk / "out.nxs"), groups={"sum": {"mode": "replace"}})
    )
    w.on_stream_start("s", {})
    with pytest.raises(OSError) as caught:
        for msg_id in range(1, 100):
            spectrum = np.full(msg_id * 50_000, msg_id, dtype=np.float64)  # 0.4 MB more each
            w.process(Message(data={"y": spectrum}, stream="s", id=msg_id, port="sum"))
            w.checkpoint()
    group_file = disk / "out_data" / "s" / "sum.h5"
    assert f"{group_file}: no space left" in str(caught.value)
    with pytest.raises(OSError):
        w.close()
    with h5py.File(group_file, "r") as f:
        shown = int(f["entry/sum/id"][()])
        y = f["entry/sum/y"][()]
    assert 0 < shown < msg_id
    np.testing.assert_array_equal(y, np.full(shown * 50_000, shown, dtype=np.float64))
    assert nxcheck(group_file)[0] == 0
