"""``nexus_writer`` on what ``xrf.fit`` and ``map`` send, driven in-process (beampipe.testing)
on PyMca's real steel spectrum placed on a 2 x 3 raster (tests/test_xrf_map.py): the maps in the
file equal the map reducer's output, the element names are the maps' first axis, one NXdata per
element links its map, the NXprocess holds the ``.cfg`` text byte for byte and the concentration
settings, the NXfluo view links the spectra; nxcheck finds no error in the file; and bad
``images`` metadata is refused clearly."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import nxcheck
from test_xrf_fit import DATA
from test_xrf_map import SHAPE, points

import beampipe
from beampipe import EndOfStream, StreamStart
from beampipe.nodes.nexus.writer import NexusWriter
from beampipe.nodes.reduce.raster import Map
from beampipe.nodes.xrf.fit import XrfFit
from beampipe.testing import run

MAP = {"shape": list(SHAPE), "fields": ["area", "chisq"], "x": "x", "y": "y", "split": True}


def fits(config: Path, **params: object) -> list[beampipe.Message]:
    """xrf.fit's messages for the spectra of test_xrf_map's raster."""
    params = {"config": str(config), "mode": "linear", **params}
    return run(XrfFit, points("xy"), params=params, name="fit").messages()


def write(path: Path, ports: dict[str, list[beampipe.Message]], **params: object) -> None:
    """The messages of each port, in that order, through nexus_writer into ``path``."""
    items: list = [StreamStart("s", {"sample": "steel"})]
    items += [m.replace(port=port) for port, msgs in ports.items() for m in msgs]
    items.append(EndOfStream("s", max(m.id for msgs in ports.values() for m in msgs)))
    params = {"groups": {"maps": {"mode": "replace"}}, "xas": None, **params}
    run(NexusWriter, items, params={"path": str(path), **params})


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, list]:
    fitted = fits(DATA / "Steel.cfg", keep_spectrum=True, concentrations=True)
    maps = run(Map, fitted, params=MAP, name="maps", check_finite=False).messages()
    path = tmp_path_factory.mktemp("nexus") / "xrf.nxs"
    write(path, {"fit": fitted, "maps": maps}, fluo={"port": "fit"})
    return path, fitted, maps


def test_maps_equal_the_map_reducer_and_name_the_elements(written: tuple) -> None:
    path, _, maps = written
    final = maps[-1].data
    names = maps[-1].metadata["names"]
    with h5py.File(path, "r") as f:
        group = f["s/maps"]
        for key in ("area", "chisq", "measured", "x", "y"):
            np.testing.assert_array_equal(group[key][()], final[key])
        assert list(group["names"].asstr()[()]) == names and len(names) == 15
        assert list(group.attrs["axes"]) == ["names", "y", "x"]
        assert group.attrs["names_indices"] == 0
        for k, name in enumerate(names):
            image = f[f"s/maps_{name.replace(' ', '_')}"]
            assert image.attrs["NX_class"] == "NXdata"
            assert image["title"].asstr()[()] == name
            signal = image.attrs["signal"]
            assert image[signal] == group[signal]  # a hard link, not a copy
            np.testing.assert_array_equal(image[signal][()], final["area"][k])
            assert list(image.attrs["axes"]) == ["y", "x"] and image["y"] == group["y"]


def test_nxprocess_holds_the_cfg_and_the_concentration_settings(written: tuple) -> None:
    path, fitted, _ = written
    process = fitted[0].metadata["process"]
    with h5py.File(path, "r") as f:
        group = f["s/xrf_fit"]
        assert group["program"].asstr()[()] == "PyMca"
        assert group["config/data"].asstr()[()].encode() == (DATA / "Steel.cfg").read_bytes()
        settings = group["concentrations"]
        assert settings.attrs["NX_class"] == "NXparameters"
        for key, value in process["concentrations"].items():
            stored = settings[key].asstr()[()] if isinstance(value, str) else settings[key][()]
            assert stored == value, key
        assert bool(group["parameters/concentrations"][()])
        assert group["fit"] == f["s/fit"] and group["maps"] == f["s/maps"]


def test_nxfluo_links_the_spectra(written: tuple) -> None:
    path, fitted, _ = written
    with h5py.File(path, "r") as f:
        fluo = f["s/fluo"]
        spectra = fluo["instrument/fluorescence/data"][()]
        np.testing.assert_array_equal(spectra, [m.data["spectrum"] for m in fitted])
        np.testing.assert_array_equal(fluo["data/data"][()], spectra)
        assert fluo["data/energy"].shape == (spectra.shape[1],)
        np.testing.assert_array_equal(f["s/fit/area"][()], [m.data["area"] for m in fitted])


def test_nxcheck_finds_no_error(written: tuple) -> None:
    errors, text = nxcheck(written[0])
    assert errors == 0, text


def test_images_that_name_no_map_are_refused(written: tuple, tmp_path: Path) -> None:
    _, _, maps = written
    bad = maps[-1].replace(metadata={**maps[-1].metadata, "images": {"Fe Ka": "area_Fe"}})
    with pytest.raises(ValueError, match=r"stream 's' id \d+ port 'maps': metadata 'images' "):
        write(tmp_path / "bad.nxs", {"maps": [bad]})


def test_metadata_stored_as_data_and_missing_metadata_refused(written: tuple, tmp_path: Path):
    _, fitted, _ = written
    path = tmp_path / "positions.nxs"
    groups = {"fit": {"metadata": ["xy.x", "y"]}, "maps": {"mode": "replace"}}
    moved = [m.replace(metadata={**m.metadata, "xy": {"x": 0.5 * m.metadata["x"]}}) for m in fitted]
    write(path, {"fit": moved}, groups=groups)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["s/fit/x"][()], [m.metadata["xy"]["x"] for m in moved])
        np.testing.assert_array_equal(f["s/fit/y"][()], [m.metadata["y"] for m in moved])
    with pytest.raises(KeyError) as info:
        write(tmp_path / "missing.nxs", {"fit": fitted}, groups=groups)
    text = str(info.value)
    for part in ("stream 's' id 1 port 'fit'", "no metadata item 'xy.x'", "'xy' not in: x, y"):
        assert part in text, text


def test_live_maps_appended_get_stacked_images(written: tuple, tmp_path: Path) -> None:
    # every map the reducer sent, one row each (append mode): the per-element groups show the
    # stack of each element's maps against id
    _, _, maps = written
    path = tmp_path / "stack.nxs"
    write(path, {"maps": maps}, groups={"maps": {"mode": "append"}})
    with h5py.File(path, "r") as f:
        image = f["s/maps_Fe_Ka"]
        assert list(image.attrs["axes"]) == ["id", ".", "."] and image["id"] == f["s/maps/id"]
        stack = image[image.attrs["signal"]][()]
        np.testing.assert_array_equal(stack, [m.data["area_Fe_Ka"] for m in maps])
    errors, text = nxcheck(path)
    assert errors == 0, text
