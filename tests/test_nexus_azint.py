"""``nexus_writer`` and azimuthally integrated patterns (issue 18): the cakes of
``azint.integrate2d`` on the real WAXS2 frame of NSLS-II LiX get the NXazint2d view (nxcheck: 0
errors; once through a real ``beampipe run``, image_files -> integrate2d -> nexus_writer, the
cake equal to pyFAI's ``integrate2d`` called directly), a stream's axes are stored once (a
changed axis is an error), patterns on r get no view, and a group file with axes stored once is
resumed after a crash.

The messages are made by ``azint.integrate2d`` / ``integrate1d`` run in-process
(:mod:`beampipe.testing`); test_azint.py compares them with pyFAI called directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyFAI
import pytest
from conftest import REPO, beampipe, nxcheck

import beampipe as bp
from beampipe.nodes.azint.geometry import load_pyfai
from beampipe.nodes.azint.integrate import Integrate1d, Integrate2d
from beampipe.nodes.nexus.files import GroupFile
from beampipe.nodes.nexus.writer import NexusWriter
from beampipe.testing import Harness, run

LIX = REPO / "examples" / "saxs-lix"
GEOMETRY = {"poni": str(LIX / "waxs2.poni"), "mask": f"{LIX / 'masks.h5'}::/waxs2"}

load_pyfai()


def waxs_frames() -> list[np.ndarray]:
    """The WAXS2 frame of the LiX file (int32, (1043, 981)) and the same times 0.5 (float32)."""
    with h5py.File(LIX / "data" / "AgBH-2020Aug16.h5") as f:
        frame = f["AgBH_2020Aug16/primary/data/pilW2_image"][0]
    return [frame, frame.astype(np.float32) * np.float32(0.5)]


def integrated(node: Any, params: dict[str, Any], port: str) -> list[Any]:
    """StreamStart, the node's results on the WAXS2 frames (on ``port``), EndOfStream."""
    items: list[Any] = [bp.StreamStart("waxs", {})]
    for i, frame in enumerate(waxs_frames(), 1):
        meta = {"signal": "image"}
        items.append(bp.Message(data={"image": frame}, metadata=meta, stream="waxs", id=i))
    results = run(node, [*items, bp.EndOfStream("waxs", 2)], {**GEOMETRY, **params}, name="azint")
    out = [
        bp.Message(data=m.data, metadata=m.metadata, stream=m.stream, id=m.id, port=port)
        for m in results.messages()
    ]
    meta = {
        "beamline": "LiX (16-ID)",
        "facility": "NSLS-II",
        "source_type": "Synchrotron X-ray Source",
    }
    return [bp.StreamStart("waxs", meta), *out, bp.EndOfStream("waxs", len(out))]


def writer(path: Path) -> NexusWriter:
    return NexusWriter(NexusWriter.Params(path=str(path), xas=None, xasproc=None), name="nexus")


def test_cakes_get_the_nxazint2d_view_against_one_q_and_chi_axis(tmp_path):
    items = integrated(Integrate2d, {"unit": "q_A^-1", "npt": 300, "npt_azim": 36}, "cake")
    sent = [m for m in items if isinstance(m, bp.Message)]
    run(writer(tmp_path / "cake.nxs"), items)
    with h5py.File(tmp_path / "cake.nxs") as f:
        group = f["waxs/cake"]
        assert group["intensity"].shape == (2, 36, 300)
        assert group["q"].shape == (300,) and group["chi"].shape == (36,)
        assert list(group.attrs["axes"]) == ["id", "chi", "q"]
        for k, msg in enumerate(sent):
            np.testing.assert_array_equal(group["intensity"][k], msg.data["intensity"])
            np.testing.assert_array_equal(group["sigma"][k], msg.data["sigma"])
        np.testing.assert_array_equal(group["q"][()], sent[0].data["q"])
        np.testing.assert_array_equal(group["chi"][()], sent[0].data["chi"])
        sub = f["waxs/cake_azint"]
        assert sub["definition"].asstr()[()] == "NXazint2d"
        data = sub["data"]
        assert list(data.attrs["axes"]) == [".", "azimuthal_axis", "radial_axis"]
        assert data.attrs["interpretation"] == "image"
        assert data["azimuthal_axis"].attrs["long_name"] == "azimuthal bin center"
        assert data["azimuthal_axis"].attrs["units"] == "degree"
        np.testing.assert_array_equal(data["I"][()], group["intensity"][()])
        assert "monitor" not in sub and not sub["monitor_applied"][()]
    errors, report = nxcheck(tmp_path / "cake.nxs", "-a", "-p", "/waxs/cake_azint")
    assert errors == 0, report
    assert nxcheck(tmp_path / "cake.nxs")[0] == 0


def test_pipeline_image_files_integrate2d_nexus_cake_equals_pyfai_and_passes_nxcheck(tmp_path):
    data = LIX / "data" / "AgBH-2020Aug16.h5"
    (tmp_path / "pipeline.yaml").write_text(
        f"""\
name: cake
nodes:
  frames:
    use: image_files
    params: {{paths: {data}, dataset: AgBH_2020Aug16/primary/data/pilW2_image}}
  cake:
    use: azint.integrate2d
    params:
      poni: {GEOMETRY["poni"]}
      mask: "{GEOMETRY["mask"]}"
      unit: q_A^-1
      npt: 300
      npt_azim: 72
      radial_range: [0.5, 3.0]
  nexus:
    use: nexus_writer
    params:
      path: out/cake.nxs
      xas: null
      xasproc: null
      stream_metadata:  # what NXazint2d's NXinstrument needs and the frames do not say
        beamline: LiX (16-ID)
        facility: NSLS-II
        source_type: Synchrotron X-ray Source
connections:
  - frames -> cake
  - cake -> nexus.cake
"""
    )
    done = beampipe("run", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    with h5py.File(data) as f, h5py.File(LIX / "masks.h5") as masks:
        frame = f["AgBH_2020Aug16/primary/data/pilW2_image"][0]
        mask = masks["waxs2"][()] != 0
    ai = pyFAI.load(GEOMETRY["poni"])
    options = {"unit": "q_A^-1", "mask": mask, "radial_range": (0.5, 3.0)}
    want = ai.integrate2d(frame, 300, 72, error_model="poisson", **options)
    path = tmp_path / "out" / "cake.nxs"
    with h5py.File(path) as f:
        (entry,) = f  # one stream: the file
        group = f[entry]["cake"]
        assert group["intensity"].shape == (1, 72, 300)
        np.testing.assert_allclose(group["intensity"][0], want.intensity, rtol=1e-6)
        np.testing.assert_allclose(group["sigma"][0], want.sigma, rtol=1e-6)
        np.testing.assert_allclose(group["q"][()], want.radial, rtol=1e-6)
        np.testing.assert_allclose(group["chi"][()], want.azimuthal, rtol=1e-6)
        sub = f[entry]["cake_azint"]
        assert sub["definition"].asstr()[()] == "NXazint2d"
        assert list(sub["reduction/input/radial_range"][()]) == [0.5, 3.0]
        np.testing.assert_array_equal(sub["data/I"][()], group["intensity"][()])
    errors, report = nxcheck(path, "-a", "-p", f"/{entry}/cake_azint")
    assert errors == 0, report
    assert nxcheck(path)[0] == 0


def test_patterns_on_r_keep_one_r_axis_but_get_no_nxazint_view(tmp_path):
    items = integrated(Integrate1d, {"unit": "r_mm", "npt": 200}, "pattern")
    run(writer(tmp_path / "r.nxs"), items)
    with h5py.File(tmp_path / "r.nxs") as f:
        assert f["waxs/pattern/r"].shape == (200,)
        assert f["waxs/pattern/intensity"].shape == (2, 200)
        assert "pattern_azint" not in f["waxs"]


def pattern(msg_id: int, q: np.ndarray, stream: str = "s") -> bp.Message:
    data = {"intensity": np.full(q.shape, float(msg_id)), "q": q}
    meta = {"signal": "intensity", "axes": ["q"], "units": {"q": "1/nm"}}
    return bp.Message(data=data, metadata=meta, stream=stream, id=msg_id, port="p")


def test_a_changed_axis_is_refused_naming_stream_id_and_port(tmp_path):
    w = writer(tmp_path / "bad.nxs")
    w.on_stream_start("s", {})
    q = np.linspace(0.1, 10, 50)
    w.process(pattern(1, q))
    with pytest.raises(ValueError, match=r"stream 's' id 2 port 'p': 'q' differs from the"):
        w.process(pattern(2, q * 1.01))
    w.process(pattern(3, q.copy()))
    w.close()
    with h5py.File(tmp_path / "bad.nxs") as f:
        assert f["s/p/id"][()].tolist() == [1, 3]
        np.testing.assert_array_equal(f["s/p/q"][()], q)


def test_the_fixed_param_stores_any_axis_once(tmp_path):
    w = NexusWriter(
        NexusWriter.Params(path=str(tmp_path / "f.nxs"), groups={"p": {"fixed": ["energy"]}}),
        name="nexus",
    )
    energy = np.arange(1.0, 6.0)
    items: list[Any] = [bp.StreamStart("s", {})]
    for k in (1, 2):
        data = {"counts": energy * k, "energy": energy}
        meta = {"axes": ["energy"]}
        items.append(bp.Message(data=data, metadata=meta, stream="s", id=k, port="p"))
    run(w, [*items, bp.EndOfStream("s", 2)])
    with h5py.File(tmp_path / "f.nxs") as f:
        assert f["s/p/energy"].shape == (5,) and f["s/p/counts"].shape == (2, 5)
        assert list(f["s/p"].attrs["axes"]) == ["id", "energy"]


def test_a_group_file_with_an_axis_stored_once_is_resumed(tmp_path):
    q = np.linspace(0.1, 10, 50)
    path = tmp_path / "p.h5"
    first = pattern(1, q)
    group = GroupFile(path, "p", first, "append", "intensity", ["q"], fixed=frozenset({"q"}))
    group.write(first)
    group.write(pattern(2, q))
    group.flush()
    group.file.close()  # as a writer that died after its flush leaves it (closed: see salvage)
    resumed = GroupFile.resume(path, "p", pattern(2, q), "append")
    assert resumed.rows == 2 and set(resumed.fixed) == {"q"}
    resumed.write(pattern(2, q))  # sent again after the crash: skipped
    resumed.write(pattern(3, q))
    with pytest.raises(ValueError, match="'q' differs"):
        resumed.write(pattern(4, q[::-1].copy()))
    resumed.close()
    with h5py.File(path) as f:
        assert f["entry/p/id"][()].tolist() == [1, 2, 3]
        assert f["entry/p/intensity"][:, 0].tolist() == [1.0, 2.0, 3.0]
        np.testing.assert_array_equal(f["entry/p/q"][()], q)


def test_a_resumed_writer_keeps_the_nxprocess_of_the_first_pattern_only_it_carried(tmp_path):
    """``azint.*`` sends ``process`` on a stream's first pattern only: a writer restarted after
    that one was written (and flushed) goes on with patterns without it, and the view keeps
    the NXprocess made from the first."""
    start, first, second, end = integrated(Integrate1d, {"unit": "q_A^-1", "npt": 300}, "azint")
    assert "process" in first.metadata and "process" not in second.metadata
    crashed = Harness(writer(tmp_path / "p.nxs"))
    crashed.feed([start, first])
    crashed.node.checkpoint()
    crashed.close()  # its group file closed, as after a failed write (GroupFile.resume)
    resumed = Harness(writer(tmp_path / "p.nxs"), restarts=1)
    resumed.feed([start, first, second, end])  # the unacknowledged first comes again
    resumed.finish()
    with h5py.File(tmp_path / "p.nxs") as f:
        assert f["waxs/azint/id"][()].tolist() == [1, 2]
        assert [k for k in f["waxs"] if k.endswith("_azint")] == ["azint_azint"]
        given = f["waxs/azint_azint/reduction/input"]
        assert given["poni"].asstr()[()] == Path(GEOMETRY["poni"]).read_text()
        assert given["npt"][()] == 300
    errors, report = nxcheck(tmp_path / "p.nxs", "-a", "-p", "/waxs/azint_azint")
    assert errors == 0, report


def test_without_process_metadata_the_view_leaves_out_what_it_is_not_told(tmp_path):
    """Patterns from an integrator that gives no ``process`` metadata: the NXazint1d view holds
    the data and nothing invented; nxcheck names the required items it lacks."""
    w = writer(tmp_path / "bare.nxs")
    q = np.linspace(0.1, 10, 50)
    run(w, [bp.StreamStart("s", {}), pattern(1, q), pattern(2, q), bp.EndOfStream("s", 2)])
    with h5py.File(tmp_path / "bare.nxs") as f:
        sub = f["s/p_azint"]
        assert sub["definition"].asstr()[()] == "NXazint1d"
        assert "program" not in sub["reduction"] and "solid_angle_applied" not in sub
        assert "monochromator" not in sub["instrument"] and "name" not in sub["instrument"]
        np.testing.assert_array_equal(sub["data/radial_axis"][()], q)
        assert sub["data/I"].shape == (2, 50)
    errors, report = nxcheck(tmp_path / "bare.nxs", "-a", "-p", "/s/p_azint")
    assert errors == 10, report  # the 10 items below, and nothing else
    for item in ("reduction/program", "reduction/version", "reduction/reference"):
        assert f"/s/p_azint/{item}\n        This required field is not in" in report, report
    for name in ("solid_angle", "polarization", "normalization"):
        assert f"/s/p_azint/{name}_applied\n    This required field is not" in report, report
    assert "NXmonochromator\n        This required group is not in the NeXus file" in report
    assert nxcheck(tmp_path / "bare.nxs")[0] == 0
