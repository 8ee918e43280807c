"""``map`` after ``xrf.fit``: a real spectrum (PyMca's Steel.spe, scaled differently at each
point) on a 2 x 3 raster; the maps equal PyMca's fit run directly on each spectrum placed at its
position; an unmeasured pixel stays NaN, is counted and warned about; positions from x/y, a
row-major index or the message id; a position missing or outside the raster is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from test_xrf_fit import DATA, direct_fit, read_spectrum

import beampipe
from beampipe.nodes.reduce.raster import Map, PositionError
from beampipe.nodes.xrf.fit import XrfFit
from beampipe.testing import run

SHAPE = (2, 3)  # ny, nx
SCALE = {(0, 0): 1.0, (0, 1): 0.5, (0, 2): 0.25, (1, 0): 2.0, (1, 2): 0.75}  # (1, 1) missing


def points(position: str) -> list[beampipe.Message]:
    """One message per measured pixel, in raster order, with its position as ``position``
    says (``xy``, ``index`` or ``id``)."""
    y = read_spectrum("Steel.spe")
    out = []
    for (row, col), factor in SCALE.items():
        flat = row * SHAPE[1] + col
        metadata = {"xy": {"x": col, "y": row}, "index": {"index": flat}, "id": {}}[position]
        out.append(
            beampipe.Message(
                data={"spectrum": np.round(factor * y)}, metadata=metadata, stream="s", id=flat + 1
            )
        )
    return out


def fitted(position: str) -> list[beampipe.Message]:
    params = {"config": str(DATA / "Steel.cfg"), "mode": "linear"}
    return run(XrfFit, points(position), params=params, name="fit").messages()


@pytest.fixture(scope="module")
def fits_xy() -> list[beampipe.Message]:
    return fitted("xy")


def test_map_equals_direct_fit_at_the_positions(fits_xy: list[beampipe.Message]) -> None:
    params = {
        "shape": list(SHAPE),
        "fields": ["area", "area_sigma", "chisq"],
        "x": "x",
        "y": "y",
        "every": 2,
    }
    results = run(Map, fits_xy, params=params, name="maps")
    out = results.messages()
    assert [m.metadata["final"] for m in out] == [False, False, True]
    assert [m.metadata["measured"] for m in out] == [2, 4, 5]
    final = out[-1]
    lines = final.metadata["names"]
    assert final.data["area"].shape == (len(lines), *SHAPE)
    assert final.data["chisq"].shape == SHAPE
    y = read_spectrum("Steel.spe")
    for (row, col), factor in SCALE.items():
        ref = direct_fit("Steel.spe", "linear", np.round(factor * y))
        assert lines == list(ref["groups"])
        np.testing.assert_allclose(
            final.data["area"][:, row, col], [ref[g]["fitarea"] for g in lines], rtol=1e-6
        )
        np.testing.assert_allclose(
            final.data["area_sigma"][:, row, col], [ref[g]["sigmaarea"] for g in lines], rtol=1e-6
        )
        np.testing.assert_allclose(final.data["chisq"][row, col], ref["chisq"], rtol=1e-6)
    assert np.all(np.isnan(final.data["area"][:, 1, 1])) and np.isnan(final.data["chisq"][1, 1])
    assert not final.data["measured"][1, 1] and final.data["measured"].sum() == 5
    assert final.metadata["missing"] == 1 and final.metadata["repeated"] == 0
    assert any("1 of 6 pixels not measured" in w for w in results.warnings), results.warnings
    # the first live map: pixels (0, 0) and (0, 1) only
    assert np.count_nonzero(~np.isnan(out[0].data["chisq"])) == 2


@pytest.mark.parametrize("position", ["index", "id"])
def test_positions_by_index_or_id(position: str, fits_xy: list[beampipe.Message]) -> None:
    params = (
        {"shape": list(SHAPE), "index": "index"} if position == "index" else {"shape": list(SHAPE)}
    )
    got = run(Map, fitted(position), params=params, name="maps").messages()[-1]
    want = run(Map, fits_xy, params={"shape": list(SHAPE), "x": "x", "y": "y"}).messages()[-1]
    np.testing.assert_array_equal(got.data["area"], want.data["area"])
    assert got.metadata["missing"] == 1


def test_position_missing_or_outside(fits_xy: list[beampipe.Message]) -> None:
    bad = fits_xy[2].replace(metadata={"x": 1, "lines": fits_xy[2].metadata["lines"]})
    with pytest.raises(PositionError) as info:
        run(Map, [fits_xy[0], bad], params={"shape": [2, 3], "x": "x", "y": "y"}, name="maps")
    text = str(info.value)
    for part in ("maps:", "stream 's'", f"id {bad.id}", "no position 'y'", "x, lines"):
        assert part in text, text
    with pytest.raises(PositionError, match=r"maps: stream 's', id 4: .* outside the raster"):
        run(Map, [fits_xy[3]], params={"shape": [1, 2], "x": "x", "y": "y"}, name="maps")


def test_motor_positions_binned_onto_the_grid(fits_xy: list[beampipe.Message]) -> None:
    # irregular motor positions (um) near the pixel centres x = 10, 10.5, 11 and y = -2, -1.5:
    # each goes to the nearest centre; the maps equal those placed by pixel index
    jitter = [0.2, -0.24, 0.1, 0.249, -0.13]
    moved = [
        m.replace(
            metadata={
                **m.metadata,
                "samx": 10.0 + 0.5 * m.metadata["x"] + 0.5 * j,
                "samy": -2.0 + 0.5 * m.metadata["y"] - 0.5 * j,
            }
        )
        for m, j in zip(fits_xy, jitter, strict=True)
    ]
    grid = {"x": [10.0, 0.5], "y": [-2.0, 0.5], "units": "um"}
    params = {"shape": list(SHAPE), "x": "samx", "y": "samy", "grid": grid}
    got = run(Map, moved, params=params, name="maps").messages()[-1]
    want = run(Map, fits_xy, params={"shape": list(SHAPE), "x": "x", "y": "y"}).messages()[-1]
    np.testing.assert_array_equal(got.data["area"], want.data["area"])
    np.testing.assert_array_equal(got.data["x"], [10.0, 10.5, 11.0])
    np.testing.assert_array_equal(got.data["y"], [-2.0, -1.5])
    assert got.metadata["units"] == {"x": "um", "y": "um"} and got.metadata["missing"] == 1
    assert got.metadata["long_names"] == {"x": "samx", "y": "samy"}  # the motors
    # half-way goes to the higher pixel; more than half a step outside is an error
    edge = fits_xy[0].replace(metadata={"samx": 10.25, "samy": -2.0})
    out = run(Map, [edge], params=params, name="maps").messages()[-1]
    assert out.data["measured"][0, 1]
    far = fits_xy[0].replace(metadata={"samx": 11.26, "samy": -2.0})
    with pytest.raises(PositionError, match=r"maps: stream 's', id 1: .*outside the raster"):
        run(Map, [far], params=params, name="maps")


def test_positions_as_data_items(fits_xy: list[beampipe.Message]) -> None:
    # a message whose position travels as 0-d data items (scan columns), not metadata
    moved = [
        m.replace(
            data={**m.data, "ix": np.float64(m.metadata["x"]), "iy": np.int64(m.metadata["y"])},
            metadata={"lines": m.metadata["lines"]},
        )
        for m in fits_xy
    ]
    got = run(Map, moved, params={"shape": list(SHAPE), "x": "ix", "y": "iy"}).messages()[-1]
    want = run(Map, fits_xy, params={"shape": list(SHAPE), "x": "x", "y": "y"}).messages()[-1]
    np.testing.assert_array_equal(got.data["area"], want.data["area"])
    assert got.metadata["missing"] == 1
