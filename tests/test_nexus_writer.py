"""The ``nexus_writer`` sink, driven by the runtime's rules (:mod:`beampipe.testing`) on real P65
XAS scans, and called directly for what a pipeline cannot send it.

The messages are built here as ``xas.transmission`` and ``xas.normalize`` build them: mu from the
XDI columns with numpy, the normalised spectrum with xraylarch's ``pre_edge``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import nxcheck

from beampipe import EndOfStream, Message, StreamStart
from beampipe.nodes.nexus.writer import NexusWriter
from beampipe.testing import run

DATA = Path(__file__).resolve().parents[1] / "examples" / "xas-p65" / "data"
SCANS = [DATA / f"20K_GOE_Fe_K_240.0000{k}.xdi" for k in (0, 1)]
ENERGY, I0, IT, IREF, IF = 0, 10, 11, 12, 13
EVERY = 500  # points between normalised spectra
POINT_META = {"signal": "mu", "axes": ["energy"], "units": {"energy": "eV"}}
# NXxas fields that P65 XDI headers do not give (see docs/nexus.md).
XAS_MISSING = {"instrument/source/type", "sample", "monitor/mode", "monitor/preset"}


# -- building the input ------------------------------------------------------------------------


def read_xdi(path: Path) -> tuple[np.ndarray, list[str]]:
    """The data table and the header lines (without ``#``) of an XDI file."""
    header = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
    return np.loadtxt(path, comments="#"), header


def scan_metadata(path: Path, header: list[str]) -> dict[str, Any]:
    """Stream metadata as the XDI replay source gives it."""
    times = next(h for h in header if h.startswith("Scan started at"))
    start, end = re.match(r"Scan started at (.+), finished at (.+)", times).groups()
    fields = dict(h.split(" = ", 1) for h in header if " = " in h)
    fields["DCM Crystal"] = next(h for h in header if h.startswith("DCM Crystal")).split(": ")[1]
    iso = [datetime.strptime(t, "%d-%m-%Y %H:%M:%S").isoformat() for t in (start, end)]
    return {
        "file": str(path),
        "title": f"{path.stem} (XAS CONTINUOUS MODE)",
        "start_time": iso[0],
        "end_time": iso[1],
        "beamline": "P65",
        "facility": "PETRA III",
        "mono_crystal": fields["DCM Crystal"],
        "header": header,
        "columns": header[-1].split(),
        "fields": fields,
        "n_points": None,
    }


def frozen(**arrays: Any) -> dict[str, np.ndarray]:
    """float64 arrays, read-only as they arrive from the wire."""
    out = {}
    for name, value in arrays.items():
        a = np.array(value, dtype=np.float64)
        a.setflags(write=False)
        out[name] = a
    return out


def point(stream: str, table: np.ndarray, i: int) -> Message:
    """The ``points`` message of row ``i`` (id ``i + 1``)."""
    row = table[i]
    data = frozen(
        energy=row[ENERGY],
        mu=np.log(row[I0] / row[IT]),
        mu_ref=np.log(row[IT] / row[IREF]),
        fluorescence=row[IF] / row[I0],
        i0=row[I0],
        it=row[IT],
        iref=row[IREF],
        **{"if": row[IF]},
    )
    return Message(data=data, metadata=dict(POINT_META), stream=stream, id=i + 1, port="points")


def normalise(energy: np.ndarray, mu: np.ndarray) -> Any:
    from larch import Group
    from larch.xafs import pre_edge

    group = Group()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre_edge(energy, mu, group=group)
    return group


def normalized(stream: str, table: np.ndarray, n: int, final: bool) -> Message:
    """The ``normalized`` message for the first ``n`` points."""
    energy = table[:n, ENERGY]
    mu = np.log(table[:n, I0] / table[:n, IT])
    g = normalise(energy, mu)
    data = frozen(energy=energy, mu=mu, norm=g.norm, pre_edge=g.pre_edge, post_edge=g.post_edge)
    metadata = {
        "e0": float(g.e0),
        "edge_step": float(g.edge_step),
        "n_points": n,
        "final": final,
        "signal": "norm",
        "axes": ["energy"],
        "units": {"energy": "eV", "e0": "eV"},
    }
    return Message(data=data, metadata=metadata, stream=stream, id=n, port="normalized")


def writer(path: Path, **params: Any) -> NexusWriter:
    params.setdefault("groups", {"normalized": {"mode": "replace"}})
    return NexusWriter(NexusWriter.Params(path=str(path), **params), name="nexus")


def run_scans(w: NexusWriter, scans: dict[str, Path], limit: int | None = None) -> dict[str, Any]:
    """Feed whole scans (or their first ``limit`` points), interleaved point by point, with a
    normalised spectrum every EVERY points and a final one; returns the tables by stream."""
    tables = {}
    items: list[Any] = []
    for stream, path in scans.items():
        table, header = read_xdi(path)
        tables[stream] = table[:limit]
        items.append(StreamStart(stream, scan_metadata(path, header)))
    for i in range(max(len(t) for t in tables.values())):
        for stream, table in tables.items():
            if i < len(table):
                items.append(point(stream, table, i))
                if (i + 1) % EVERY == 0:
                    items.append(normalized(stream, table, i + 1, final=False))
    for stream, table in tables.items():
        items.append(normalized(stream, table, len(table), final=True))
        items.append(EndOfStream(stream, len(table)))
    run(w, items)
    return tables


# -- the file written from two interleaved scans -----------------------------------------------

STREAMS = {"20K_GOE_Fe_K_240.00000": SCANS[0], "20K_GOE_Fe_K_240.00001": SCANS[1]}
ENTRIES = {"20K_GOE_Fe_K_240.00000": "entry_20K_GOE_Fe_K_240_00000"}
ENTRIES["20K_GOE_Fe_K_240.00001"] = "entry_20K_GOE_Fe_K_240_00001"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("nexus") / "out" / "xas-p65.nxs"
    tables = run_scans(writer(path), STREAMS)
    return path, tables


def test_points_are_the_scan_values_with_consecutive_ids(written):
    path, tables = written
    with h5py.File(path, "r") as f:
        for stream, table in tables.items():
            g = f[ENTRIES[stream]]["points"]
            n = len(table)
            np.testing.assert_array_equal(g["id"][()], np.arange(1, n + 1))
            np.testing.assert_array_equal(g["energy"][()], table[:, ENERGY])
            np.testing.assert_array_equal(g["mu"][()], np.log(table[:, I0] / table[:, IT]))
            np.testing.assert_array_equal(g["i0"][()], table[:, I0])
            np.testing.assert_array_equal(g["if"][()], table[:, IF])
            assert g.attrs["NX_class"] == "NXdata"
            assert g.attrs["signal"] == "mu"
            assert list(g.attrs["axes"]) == ["energy"]
            assert g.attrs["energy_indices"] == 0
            assert g["energy"].attrs["units"] == "eV"
            assert g["mu"].dtype == np.float64 and g["id"].dtype == np.int64


def test_normalized_group_holds_the_final_spectrum_with_e0_and_edge_step(written):
    path, tables = written
    with h5py.File(path, "r") as f:
        for stream, table in tables.items():
            g = f[ENTRIES[stream]]["normalized"]
            final = normalized(stream, table, len(table), final=True)
            for name in ("energy", "mu", "norm", "pre_edge", "post_edge"):
                np.testing.assert_array_equal(g[name][()], final.data[name])
            assert g["e0"][()] == final.metadata["e0"]
            assert g["e0"].attrs["units"] == "eV"
            assert g["edge_step"][()] == final.metadata["edge_step"]
            assert g["n_points"][()] == len(table) == g["id"][()]
            assert "final" not in g  # bools are not numeric fields
            assert g.attrs["signal"] == "norm"
            assert list(g.attrs["axes"]) == ["energy"]
            assert 7100 < g["e0"][()] < 7140  # Fe K edge


def test_entries_carry_the_stream_header_and_default_plots(written):
    path, _ = written
    with h5py.File(path, "r") as f:
        assert f.attrs["NX_class"] == "NXroot"
        assert list(f) == list(ENTRIES.values())
        assert f.attrs["default"] == ENTRIES["20K_GOE_Fe_K_240.00000"]
        entry = f[ENTRIES["20K_GOE_Fe_K_240.00001"]]
        assert entry.attrs["NX_class"] == "NXentry"
        assert entry.attrs["default"] == "normalized"
        assert entry["entry_identifier"].asstr()[()] == "20K_GOE_Fe_K_240.00001"
        assert entry["title"].asstr()[()] == "20K_GOE_Fe_K_240.00001 (XAS CONTINUOUS MODE)"
        assert entry["start_time"].asstr()[()] == "2020-11-22T01:52:59"
        assert entry["end_time"].asstr()[()] == "2020-11-22T01:58:02"
        assert entry["instrument/name"].asstr()[()] == "P65"
        assert entry["instrument/source/name"].asstr()[()] == "PETRA III"
        assert entry["instrument/source/probe"].asstr()[()] == "x-ray"
        crystal = entry["instrument/monochromator/crystal"]
        assert crystal["type"].asstr()[()] == "Si"
        assert list(crystal["reflection"][()]) == [1, 1, 1]
        note = entry["metadata/header"]
        assert note.attrs["NX_class"] == "NXnote"
        assert "# " not in note["data"].asstr()[()]
        assert "DCM Crystal: Si111" in note["data"].asstr()[()]
        theta = entry["metadata/fields/DCM_Theta_p64_motor_oh_09"]
        assert theta.attrs["units"] == "degrees"
        assert theta.attrs["original_name"] == "DCM Theta(p64/motor/oh.09)"
        np.testing.assert_array_equal(
            entry["instrument/monochromator/energy"], entry["points/energy"]
        )


def test_nexusformat_reads_the_file_and_finds_the_normalised_plot(written):
    from nexusformat.nexus import nxload

    path, tables = written
    root = nxload(str(path))
    try:
        assert root.plottable_data.nxpath == f"/{ENTRIES['20K_GOE_Fe_K_240.00000']}/normalized"
        entry = root[ENTRIES["20K_GOE_Fe_K_240.00001"]]
        table = tables["20K_GOE_Fe_K_240.00001"]
        np.testing.assert_array_equal(
            entry["points/mu"].nxvalue, np.log(table[:, I0] / table[:, IT])
        )
        assert entry["xas/definition"].nxvalue == "NXxas"
    finally:
        root.nxfile.close()


def test_nxcheck_finds_no_errors(written):
    errors, text = nxcheck(written[0])
    assert errors == 0, text


def test_nxxas_view_lacks_only_what_the_xdi_header_cannot_give(written):
    path, _ = written
    errors, text = nxcheck(path, "-a", "-p", f"/{ENTRIES['20K_GOE_Fe_K_240.00000']}/xas")
    assert "Application Definition: NXxas" in text
    lines = text.splitlines()
    missing = {_xas_item(lines, k) for k, line in enumerate(lines) if "required" in line}
    assert missing == XAS_MISSING, text
    assert errors == len(XAS_MISSING), text


def _xas_item(lines: list[str], k: int) -> str:
    """The item an nxcheck 'required ... is not in the NeXus file' line at ``k`` is about."""
    above = lines[k - 1].strip()
    if above.startswith("Field: "):
        return above.split("/xas/", 1)[1]
    return above.removeprefix("Group: ").removeprefix("NX")  # "Group: NXsample" -> "sample"


def test_nxxas_passes_when_the_pipeline_supplies_the_missing_facts(tmp_path):
    path = tmp_path / "xas.nxs"
    stream_metadata = {
        "source_type": "Synchrotron X-ray Source",
        "monitor_mode": "timer",
        "monitor_preset": "0.1 s",
        "sample": "goethite, 20 K",
    }
    run_scans(writer(path, stream_metadata=stream_metadata), {"scan": SCANS[0]}, limit=120)
    errors, text = nxcheck(path, "-a", "-p", "/scan/xas")
    assert errors == 0, text
    assert nxcheck(path)[0] == 0
    with h5py.File(path, "r") as f:
        assert f["scan/monitor/preset"][()] == 0.1
        assert f["scan/monitor/preset"].attrs["units"] == "s"
        assert f["scan/xas/sample/name"].asstr()[()] == "goethite, 20 K"


# -- reading while the writer runs -------------------------------------------------------------

READER = r"""
import json, sys
import h5py

path, entry = sys.argv[1:3]
with h5py.File(path, "r", swmr=True) as f:
    points = f[entry]["points"]

    def snapshot():
        for name in ("id", "energy", "mu"):
            points[name].refresh()
        n = min(len(points[name]) for name in ("id", "energy", "mu"))
        return {name: points[name][:n].tolist() for name in ("id", "energy", "mu")}

    print(json.dumps(snapshot()), flush=True)
    sys.stdin.readline()  # the writer has written more
    print(json.dumps(snapshot()), flush=True)
    sys.stdin.readline()  # the writer has added an entry: the reader still has the file open
"""


def test_another_process_reads_the_points_while_the_scan_is_written(tmp_path):
    path = tmp_path / "live" / "live.nxs"
    table, header = read_xdi(SCANS[0])
    w = writer(path, flush_interval=0.0)
    w.on_stream_start("scan", scan_metadata(SCANS[0], header))
    for i in range(300):
        w.process(point("scan", table, i))
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(path), "scan"],
        cwd=tmp_path.anchor,  # external links resolve relative to the master, not the cwd
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(reader.stdout.readline() or "null")
        assert first is not None, reader.stderr.read()
        for i in range(300, 500):
            w.process(point("scan", table, i))
        reader.stdin.write("more\n")
        reader.stdin.flush()
        second = json.loads(reader.stdout.readline() or "null")
        assert second is not None, reader.stderr.read()
        w.on_stream_start("next scan", {})  # the master is replaced, not written in place
        reader.stdin.write("done\n")
        reader.stdin.flush()
        assert reader.wait(timeout=60) == 0, reader.stderr.read()
    finally:
        reader.kill()
        w.close()
    mu = np.log(table[:, I0] / table[:, IT])
    for seen, n in ((first, 300), (second, 500)):
        assert seen["id"] == list(range(1, n + 1))
        assert seen["energy"] == table[:n, ENERGY].tolist()
        assert seen["mu"] == mu[:n].tolist()
    with h5py.File(path, "r") as f:  # after close: an ordinary file, no SWMR needed
        assert list(f) == ["scan", "next_scan"]
        assert len(f["scan/points/id"]) == 500


# -- generic behaviour and errors --------------------------------------------------------------


def test_images_are_stacked_and_replace_mode_keeps_the_last(tmp_path):
    w = writer(tmp_path / "img.nxs", groups={"sum": {"mode": "replace", "signal": "image"}})
    items: list[Any] = [StreamStart("run 1", {"start_time": None, "odd": {"nested": [1, "a"]}})]
    for k in (1, 2, 3):
        image = np.full((4, 5), k, dtype=np.uint16)
        unknown_axes = {"axes": ["row", "col"]}  # no such datasets: plotted as "."
        items.append(
            Message(
                data={"image": image}, metadata=unknown_axes, stream="run 1", id=k, port="frames"
            )
        )
        items.append(
            Message(
                data={"image": image * 10, "x": np.arange(5.0)},
                metadata={"axes": [".", "x"], "units": {"x": "mm"}, "total": float(k)},
                stream="run 1",
                id=k,
                port="sum",
            )
        )
    run(w, [*items, EndOfStream("run 1", 3)])
    with h5py.File(tmp_path / "img.nxs", "r") as f:
        entry = f["run_1"]
        assert entry.attrs["default"] == "sum"
        frames = entry["frames"]
        assert frames["image"].shape == (3, 4, 5) and frames["image"].dtype == np.uint16
        assert frames["image"][2, 0, 0] == 3
        assert frames.attrs["signal"] == "image"
        assert list(frames.attrs["axes"]) == ["id", ".", "."]
        total = entry["sum"]
        assert total["image"][0, 0] == 30 and total["id"][()] == 3
        assert total["total"][()] == 3.0
        assert total["x"].attrs["units"] == "mm"
        assert list(total.attrs["axes"]) == [".", "x"]
        assert "start_time" not in entry
        assert entry["metadata/odd/nested"].asstr()[()] == '[1, "a"]'
    assert nxcheck(tmp_path / "img.nxs")[0] == 0


def test_entry_names_are_valid_and_unique_and_an_old_file_is_replaced(tmp_path):
    path = tmp_path / "names.nxs"
    path.write_text("not HDF5")
    run(
        writer(path),
        [
            item
            for stream in ("a.b", "a_b", "9 lives")
            for item in (
                StreamStart(stream, {}),
                Message(data={"v": np.array(1.0)}, stream=stream, id=1, port="in.put"),
            )
        ],
    )
    with h5py.File(path, "r") as f:
        assert list(f) == ["a_b", "a_b_2", "entry_9_lives"]
        assert f["a_b_2/entry_identifier"].asstr()[()] == "a_b"
        assert set(f["a_b"]) == {"entry_identifier", "in_put", "metadata", "program_name", "title"}


def test_wrong_input_is_refused_with_a_clear_error(tmp_path):
    w = writer(tmp_path / "bad.nxs")
    msg = Message(data={"v": np.array(1.0)}, stream="s", id=1, port="p")
    with pytest.raises(KeyError, match="'s' was not started"):
        w.process(msg)
    w.on_stream_start("s", {})
    with pytest.raises(ValueError, match="started twice"):
        w.on_stream_start("s", {})
    with pytest.raises(TypeError, match="numeric arrays only"):
        w.process(Message(data={"raw": b"\x00"}, stream="s", id=1, port="p"))
    w.process(msg)
    with pytest.raises(ValueError, match="data names"):
        w.process(Message(data={"w": np.array(1.0)}, stream="s", id=2, port="p"))
    with pytest.raises(ValueError, match="shape"):
        w.process(Message(data={"v": np.zeros(3)}, stream="s", id=2, port="p"))
    w.close()
    with h5py.File(tmp_path / "bad.nxs", "r") as f:
        assert f["s/p/id"][()].tolist() == [1]
