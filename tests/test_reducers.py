"""The built-in reducers: ``sum`` and ``xas.merge``, driven by the runtime's rules
(:mod:`beampipe.testing`) and run end to end.

The end-to-end merge is checked against the same computation done directly: numpy for mu,
xraylarch's ``pre_edge`` for each scan, ``numpy.interp`` onto the grid and the mean.
"""

from __future__ import annotations

import types

import h5py
import numpy as np
import pytest
from conftest import EXAMPLE, beampipe
from larch import Group
from larch.xafs import pre_edge

import beampipe as bp
from beampipe.config import load_pipeline
from beampipe.nodes.columns import MissingColumn
from beampipe.nodes.reduce.sum import Sum
from beampipe.nodes.xas.merge import Merge
from beampipe.testing import Harness, Results
from beampipe.worker import reducer as reducer_module

SCANS = sorted((EXAMPLE / "data").glob("20K_GOE_Fe_K_240.*.xdi"))


def from_hooks(results: Results, *inputs: str) -> list[bp.Message | bp.StreamStart]:
    """What a call sent but the markers the runtime forwards or adds: the starts of the input
    streams ``inputs`` and every end marker."""
    return [
        i
        for i in results.items()
        if isinstance(i, bp.Message) or (isinstance(i, bp.StreamStart) and i.stream not in inputs)
    ]


def frozen(**data) -> dict[str, np.ndarray]:
    """Arrays as they come from the wire: read-only."""
    for value in data.values():
        value.setflags(write=False)
    return data


def feed(harness: Harness, stream: str, messages: list[dict[str, np.ndarray]], start: int = 1):
    """Feed messages with ids start, start + 1, ...; return (id, messages sent) pairs."""
    out = []
    for i, data in enumerate(messages, start):
        items = harness.feed([bp.Message(data=data, stream=stream, id=i)]).messages()
        if items:
            out.append((i, items))
    return out


# -- sum, driven by the harness --------------------------------------------------------------


def test_sum_equals_numpy_per_stream_in_float64():
    rng = np.random.default_rng(1)
    frames = {
        s: rng.integers(0, 65535, size=(4, 3, 5), dtype=np.uint16) for s in ("scan_a", "scan_b")
    }
    i0 = {s: rng.random(4) for s in frames}
    harness = Harness(Sum, name="total")
    assert Sum.reducer
    harness.feed([bp.StreamStart(s, {}) for s in frames])
    for k in range(4):  # the two streams interleave
        for s in frames:
            data = frozen(image=frames[s][k].copy(), i0=np.array(i0[s][k]))
            data["label"] = b"not summed"
            assert harness.feed([bp.Message(data=data, stream=s, id=k + 1)]).items() == []
    for s in frames:
        (out,) = harness.feed([bp.EndOfStream(s, 4)]).messages()
        assert out.stream == s and out.id == 4
        assert set(out.data) == {"image", "i0", "count"}
        assert out.data["image"].dtype == np.float64
        np.testing.assert_array_equal(out.data["image"], frames[s].sum(axis=0, dtype=np.float64))
        np.testing.assert_allclose(out.data["i0"], i0[s].sum(), rtol=1e-15)
        assert out.data["count"].dtype == np.int64 and out.data["count"].shape == ()
        assert int(out.data["count"]) == 4
        assert out.metadata == {"count": 4, "final": True}  # two fields: no signal


def test_sum_of_one_named_field_is_the_signal_and_does_not_wrap_around():
    harness = Harness(Sum, {"fields": ["image"]}, name="total")
    frame = np.full((2, 2), 65535, dtype=np.uint16)
    feed(harness, "s", [frozen(image=frame.copy(), other=np.ones(3)) for _ in range(3)])
    (out,) = harness.feed([bp.EndOfStream("s", 3)]).messages()
    assert set(out.data) == {"image", "count"}
    np.testing.assert_array_equal(out.data["image"], np.full((2, 2), 3 * 65535.0))
    assert out.metadata == {"count": 3, "final": True, "signal": "image"}


def test_sum_every_n_messages_emits_copies_of_the_sum_so_far():
    harness = Harness(Sum, {"every": 2}, name="total")
    emitted = feed(harness, "s", [frozen(x=np.array([1.0, 2.0])) for _ in range(5)])
    assert [i for i, _ in emitted] == [2, 4]
    first = emitted[0][1][0]
    assert first.metadata == {"count": 2, "final": False, "signal": "x"}
    np.testing.assert_array_equal(first.data["x"], [2.0, 4.0])  # not changed by later messages
    np.testing.assert_array_equal(emitted[1][1][0].data["x"], [4.0, 8.0])
    (final,) = harness.feed([bp.EndOfStream("s", 5)]).messages()
    np.testing.assert_array_equal(final.data["x"], [5.0, 10.0])
    assert final.metadata["final"] and int(final.data["count"]) == 5


def test_sum_interval_emits_when_the_time_has_passed(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(reducer_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    harness = Harness(Sum, {"interval": 1.0}, name="total")
    emitted = []
    for i in range(1, 11):  # 0.25 s apart; the clock starts at the first message: ids 5 and 9
        clock[0] += 0.25
        items = harness.feed([bp.Message(data={"x": np.array(1.0)}, stream="s", id=i)]).messages()
        emitted += [(i, int(m.data["count"])) for m in items]
    assert emitted == [(5, 5), (9, 9)]


def test_sum_shape_mismatch_names_stream_id_and_field():
    harness = Harness(Sum, name="total")
    feed(harness, "scan_7", [frozen(image=np.zeros((2, 3)))])
    with pytest.raises(ValueError, match=r"total: stream 'scan_7', id 2: field 'image' has shape"):
        feed(harness, "scan_7", [frozen(image=np.zeros((3, 2)))], start=2)


def test_sum_missing_and_bad_fields_are_errors():
    with pytest.raises(MissingColumn, match=r"total: stream 's', id 1: no column 'image'"):
        feed(Harness(Sum, {"fields": ["image"]}, name="total"), "s", [frozen(frame=np.zeros(2))])
    with pytest.raises(TypeError, match="'image' is bytes"):
        feed(Harness(Sum, {"fields": ["image"]}, name="total"), "s", [{"image": b"abc"}])
    with pytest.raises(ValueError, match="clashes with the message count"):
        feed(Harness(Sum, name="total"), "s", [frozen(count=np.ones(2))])
    with pytest.raises(ValueError, match="no numeric array"):
        feed(Harness(Sum, name="total"), "s", [{"raw": b"abc"}])


# -- sum, end to end ---------------------------------------------------------------------------


def test_sum_end_to_end_folds_the_results_of_all_replicas(tmp_path):
    pipeline = tmp_path / "sum.yaml"
    pipeline.write_text(
        f"""
name: sum-p65
nodes:
  scan:
    use: xdi_replay
    params: {{paths: ["{EXAMPLE / "data" / "20K_GOE_Fe_K_240.0000[01].xdi"}"], pace: max}}
  mu:
    use: xas.transmission
    replicas: 3
  total:
    use: sum
    params: {{fields: [mu, i0], every: 500}}
  nexus:
    use: nexus_writer
    params: {{path: out/sum.nxs, groups: {{total: {{mode: replace}}}}}}
connections:
  - scan.out -> mu.in
  - mu.out -> total.in
  - total.out -> nexus.total
"""
    )
    result = beampipe("run", str(pipeline), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "out" / "sum.nxs", "r") as f:
        entries = {f[n]["entry_identifier"][()].decode(): f[n] for n in f}
        assert sorted(entries) == [s.stem for s in SCANS[:2]]
        for scan in SCANS[:2]:
            columns = np.loadtxt(scan)
            total = entries[scan.stem]["total"]
            assert int(total["count"][()]) == len(columns)
            assert int(total["id"][()]) == len(columns)
            mu = np.log(columns[:, 10] / columns[:, 11])
            np.testing.assert_allclose(total["mu"][()], mu.sum(), rtol=1e-12)
            np.testing.assert_allclose(total["i0"][()], columns[:, 10].sum(), rtol=1e-12)


# -- xas.merge, driven by the harness -------------------------------------------------------------


def spectrum(energy, norm, final=True, e0=7100.0) -> dict:
    return {
        "data": {"energy": np.asarray(energy, float), "norm": np.asarray(norm, float)},
        "metadata": {"final": final, "e0": e0},
    }


def test_merge_folds_final_spectra_only_and_is_independent_of_arrival_order():
    a = spectrum([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0], e0=2.0)
    b = spectrum([1.5, 2.5, 3.5, 4.5], [1.0, 1.0, 1.0, 1.0], e0=3.0)
    partial = spectrum([1.0, 2.0], [5.0, 5.0], final=False)

    def run(order):
        harness = Harness(Merge, {"flat": None}, name="merge")
        sent = []
        for stream, spectra in order:
            msgs = [bp.Message(stream=stream, id=7, **s) for s in spectra]
            sent += from_hooks(
                harness.feed([bp.StreamStart(stream, {"beamline": "P65"}), *msgs]), stream
            )
            assert from_hooks(harness.feed([bp.EndOfStream(stream, 7)]), stream) == []
        return sent, from_hooks(harness.finish())

    sent, final = run([("b", [partial, b]), ("a", [a])])
    start, first, second = sent
    assert start == bp.StreamStart(
        "merged", {"title": "merged: mean of normalised spectra", "beamline": "P65"}
    )
    assert (first.stream, first.id, first.metadata["scans"]) == ("merged", 1, ["b"])
    assert (second.id, second.metadata["scans"], int(second.data["n_scans"])) == (2, ["a", "b"], 2)
    (last,) = final
    assert (last.id, last.metadata["final"], second.metadata["final"]) == (3, True, False)
    # grid: the energies of "a" (sorts first) inside the range both cover, [1.5, 4]
    np.testing.assert_array_equal(last.data["energy"], [2.0, 3.0, 4.0])
    np.testing.assert_allclose(last.data["norm"], [(1 + 1) / 2, (2 + 1) / 2, (3 + 1) / 2])
    np.testing.assert_allclose(last.data["norm_std"], [0.0, 0.5, 1.0])
    assert last.metadata["e0"] == 2.5
    assert last.metadata["units"] == {"energy": "eV", "e0": "eV"}
    assert (last.metadata["signal"], last.metadata["axes"]) == ("norm", ["energy"])
    _, (other,) = run([("a", [a]), ("b", [b])])
    np.testing.assert_array_equal(other.data["norm"], last.data["norm"])


def test_merge_on_an_explicit_grid_and_errors():
    harness = Harness(
        Merge, {"grid": {"start": 0, "stop": 3, "step": 0.5}, "flat": None, "every": 0}
    )
    s = spectrum([1.0, 2.0, 3.0], [10.0, 20.0, 30.0])
    assert from_hooks(harness.feed([bp.Message(stream="x", id=1, **s)]), "x") == []  # every: 0
    (start, out) = from_hooks(harness.finish(), "x")
    assert isinstance(start, bp.StreamStart)
    np.testing.assert_array_equal(out.data["energy"], [1.0, 1.5, 2.0, 2.5, 3.0])
    np.testing.assert_allclose(out.data["norm"], [10, 15, 20, 25, 30])

    harness = Harness(Merge, {"flat": None})
    harness.feed([bp.Message(stream="x", id=1, **spectrum([1.0, 2.0], [0.0, 1.0]))])
    with pytest.raises(ValueError, match="no grid point in the energy range common"):
        harness.feed([bp.Message(stream="y", id=1, **spectrum([3.0, 4.0], [0.0, 1.0]))])
    with pytest.raises(ValueError, match="has the name of the output stream"):
        harness.feed([bp.Message(stream="merged", id=1, **spectrum([1.0, 2.0], [0.0, 1.0]))])
    with pytest.raises(MissingColumn, match="no column 'flat'"):
        Harness(Merge).feed([bp.Message(stream="x", id=1, **spectrum([1, 2], [0, 1]))])


# -- xas.merge on the five P65 scans -------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    """Each scan normalised directly (numpy mu, larch pre_edge with the example's params), the
    merge grid (the first scan's energies within the range every scan covers) and the scans'
    norm linearly interpolated onto it: ``(spectra by stream, grid, norms)``."""
    params = load_pipeline(EXAMPLE / "merge.yaml").node_params("normalize")
    spectra = {}
    for scan in SCANS:  # sorted by stream name
        columns = np.loadtxt(scan)
        energy, mu = columns[:, 0], np.log(columns[:, 10] / columns[:, 11])
        group = Group(energy=energy, mu=mu)
        pre_edge(
            energy,
            mu,
            group=group,
            pre1=params.pre1,
            pre2=params.pre2,
            norm1=params.norm1,
            norm2=params.norm2,
        )
        spectra[scan.stem] = group
    lo = max(g.energy[0] for g in spectra.values())
    hi = min(g.energy[-1] for g in spectra.values())
    grid = spectra[SCANS[0].stem].energy
    grid = grid[(grid >= lo) & (grid <= hi)]
    norms = np.stack([np.interp(grid, g.energy, g.norm) for g in spectra.values()])
    return spectra, grid, norms


def test_merge_of_the_p65_scans_in_any_order_is_the_mean_on_the_first_scans_grid(reference):
    spectra, grid, norms = reference
    harness = Harness(Merge, name="merge")
    for stream in [SCANS[i].stem for i in (3, 0, 4, 2, 1)]:
        g = spectra[stream]
        data = frozen(**{k: getattr(g, k).copy() for k in ("energy", "norm", "flat", "mu")})
        msg = bp.Message(stream=stream, id=1, data=data, metadata={"e0": g.e0, "final": True})
        harness.feed([msg])
    (out,) = harness.finish().messages()
    assert out.metadata["scans"] == [s.stem for s in SCANS]
    assert int(out.data["n_scans"]) == 5 and out.id == 6
    np.testing.assert_array_equal(out.data["energy"], grid)
    np.testing.assert_allclose(out.data["norm"], norms.mean(axis=0), rtol=1e-12)
    flats = np.stack([np.interp(grid, g.energy, g.flat) for g in spectra.values()])
    np.testing.assert_allclose(out.data["flat"], flats.mean(axis=0), rtol=1e-12)


def test_merge_example_equals_the_mean_of_larch_normalised_spectra(tmp_path, reference):
    spectra, grid, norms = reference
    result = beampipe("run", str(EXAMPLE / "merge.yaml"), "--set", "scan.pace=max", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    with h5py.File(tmp_path / "out" / "xas-p65-merged.nxs", "r") as f:
        entries = {f[n]["entry_identifier"][()].decode(): f[n] for n in f}
        assert sorted(entries) == sorted([*spectra, "merged"])
        entry = entries["merged"]
        assert entry["title"][()].decode() == "merged: mean of normalised spectra"
        assert entry.attrs["default"] == "merged"
        merged = entry["merged"]
        assert merged.attrs["signal"] == "norm"
        assert merged["energy"].attrs["units"] == "eV"
        assert int(merged["n_scans"][()]) == 5
        assert int(merged["id"][()]) == 6  # a merge as each scan ended, then the final one
        np.testing.assert_array_equal(merged["energy"][()], grid)
        np.testing.assert_allclose(merged["norm"][()], norms.mean(axis=0), rtol=1e-9)
        np.testing.assert_allclose(merged["norm_std"][()], norms.std(axis=0), rtol=1e-9)
        e0 = np.mean([g.e0 for g in spectra.values()])
        np.testing.assert_allclose(merged["e0"][()], e0, rtol=1e-9)
        for stream, g in spectra.items():  # and the per-scan spectra, as with pipeline.yaml
            normalized = entries[stream]["normalized"]
            np.testing.assert_allclose(normalized["norm"][()], g.norm, rtol=1e-9)
            assert len(entries[stream]["points"]["id"]) == len(g.energy)
