"""Writes the example's data: an EIGER-like acquisition of 20 frames in data/.

The layout follows the files a DECTRIS EIGER detector writes (https://www.dectris.com/): a master
file ``series_0001_master.h5`` whose ``/entry/data`` group holds the external links
``data_000001``, ``data_000002`` to ``/entry/data/data`` in the data files
``series_0001_data_00000N.h5`` (10 frames each, bitshuffle-LZ4 compressed, chunked one frame per
chunk), and the detector description in ``/entry/instrument/detector`` (NXdetector, with
``frame_time`` in seconds). As in the detector's own files, there are no NeXus ``default``
attributes; ``hdf5_replay`` finds the data group as the only NXentry's only NXdata group.

The frames are powder rings with Poisson noise: ``detector_sim``'s ring model for 64 x 64
pixels, drawn with ``numpy.random.default_rng(1)``, as uint16 counts. Run from anywhere::

    python examples/hdf5-replay/make_data.py
"""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from beampipe.nodes.sim.detector import ring_model

HERE = Path(__file__).resolve().parent / "data"
SHAPE = (64, 64)
FRAMES = 20
PER_FILE = 10
FRAME_TIME = 0.05  # s: 20 Hz


def frames() -> np.ndarray:
    """The 20 frames, (20, 64, 64) uint16 counts."""
    rng = np.random.default_rng(1)
    return rng.poisson(ring_model(SHAPE), size=(FRAMES, *SHAPE)).astype(np.uint16)


def write(folder: Path = HERE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images = frames()
    links = []
    for k in range(FRAMES // PER_FILE):
        name = f"series_0001_data_{k + 1:06d}.h5"
        part = images[k * PER_FILE : (k + 1) * PER_FILE]
        with h5py.File(folder / name, "w") as f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            data = entry.create_group("data")
            data.attrs["NX_class"] = "NXdata"
            ds = data.create_dataset(
                "data",
                data=part,
                chunks=(1, *SHAPE),
                track_times=False,
                **hdf5plugin.Bitshuffle(cname="lz4"),
            )
            ds.attrs["image_nr_low"] = np.int32(k * PER_FILE + 1)
            ds.attrs["image_nr_high"] = np.int32((k + 1) * PER_FILE)
        links.append((f"data_{k + 1:06d}", name))

    with h5py.File(folder / "series_0001_master.h5", "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        for link, name in links:
            data[link] = h5py.ExternalLink(name, "/entry/data/data")
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        detector = instrument.create_group("detector")
        detector.attrs["NX_class"] = "NXdetector"
        detector["description"] = "simulated EIGER-like detector (beampipe example)"
        for name, value, unit in (
            ("frame_time", FRAME_TIME, "s"),
            ("count_time", FRAME_TIME - 1e-5, "s"),
            ("x_pixel_size", 75e-6, "m"),
            ("y_pixel_size", 75e-6, "m"),
            ("detector_distance", 0.2, "m"),
        ):
            detector.create_dataset(name, data=value, track_times=False)
            detector[name].attrs["units"] = unit


if __name__ == "__main__":
    write()
    print(f"wrote {FRAMES} frames to {HERE}")
