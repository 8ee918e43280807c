"""A caproto soft IOC serving a multi-element XRF detector as live scans see it: one spectrum
waveform PV per element and per-element input/output count rate PVs, plus the motor positions
and a point counter; it plays a scan point by point. For tests/test_xrf_live_elements.py:
``python tests/xrf_elements_ioc.py --points scan.npz --interfaces 127.0.0.1``.

The PVs (prefix default ``XSP3:``), named after the Xspress3 areaDetector driver's per-channel
arrays (``ARR{k}:ArrayData``) and the count rates XIA and Xspress3 IOCs serve per channel:

* ``samx``, ``samy``: float, um: the sample motors' positions;
* ``{k}:ARR{k}:ArrayData`` (k = 1..elements): int32 waveform, counts: element k's spectrum;
* ``C{k}:ICR``, ``C{k}:OCR``: float, counts/s: element k's input and output count rates;
* ``point``: int: the point counter, incremented once the point's data are in (the trigger of
  ``epics_source`` in ``snapshot`` mode).

``--points`` is a ``.npz`` file of ``samx``, ``samy`` (points,), ``counts`` (points, elements,
channels) and ``icr``, ``ocr`` (points, elements). Per point the IOC posts the positions, the
spectra, the rates, then the counter, ``--period`` seconds apart, once every PV is monitored
(as examples/xrf-map/scan_ioc.py does); it then serves the last values until stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from caproto.server import PVGroup, pvproperty, run, template_arg_parser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "xrf-map"))
from scan_ioc import monitored  # the example's check (examples/ is no package)


def ioc_class(elements: int, channels: int) -> type[PVGroup]:
    """A PVGroup class with the PVs of a detector of ``elements`` elements of ``channels``."""
    attrs: dict[str, object] = {
        "samx": pvproperty(value=0.0, units="um", precision=3),
        "samy": pvproperty(value=0.0, units="um", precision=3),
    }
    for k in range(1, elements + 1):
        attrs[f"mca{k}"] = pvproperty(
            name=f"{k}:ARR{k}:ArrayData",
            value=[0] * channels,
            dtype=int,
            max_length=channels,
            units="counts",
        )
        attrs[f"icr{k}"] = pvproperty(name=f"C{k}:ICR", value=0.0, units="counts/s")
        attrs[f"ocr{k}"] = pvproperty(name=f"C{k}:OCR", value=0.0, units="counts/s")
    names = [*attrs, "point"]  # type() adds caproto's own entries to attrs
    point = pvproperty(value=0, doc="Point counter: incremented once the point's data are in")

    async def play(self: PVGroup, instance: object, async_lib: object) -> None:
        pvs = [getattr(self, name) for name in names]
        while not all(monitored(pv) for pv in pvs):
            await async_lib.library.sleep(0.05)
        scan = self.scan
        for n in range(len(scan["samx"])):
            await self.samx.write(float(scan["samx"][n]))
            await self.samy.write(float(scan["samy"][n]))
            for k in range(1, elements + 1):
                await getattr(self, f"mca{k}").write(scan["counts"][n, k - 1].tolist())
            for k in range(1, elements + 1):
                await getattr(self, f"icr{k}").write(float(scan["icr"][n, k - 1]))
                await getattr(self, f"ocr{k}").write(float(scan["ocr"][n, k - 1]))
            await self.point.write(n + 1)
            await async_lib.library.sleep(self.period)

    attrs["point"] = point.startup(play)
    return type("ElementsIOC", (PVGroup,), attrs)


def main() -> None:
    parser, split_args = template_arg_parser(default_prefix="XSP3:", desc=__doc__)
    parser.add_argument("--points", type=Path, required=True)
    parser.add_argument("--period", type=float, default=0.1, help="seconds between points")
    args = parser.parse_args()
    ioc_options, run_options = split_args(args)
    scan = dict(np.load(args.points))
    cls = ioc_class(*scan["counts"].shape[1:])
    ioc = cls(**ioc_options)
    ioc.scan, ioc.period = scan, args.period
    run(ioc.pvdb, **run_options)


if __name__ == "__main__":
    main()
