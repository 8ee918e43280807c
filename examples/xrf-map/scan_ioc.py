"""A caproto soft IOC that plays an XRF raster scan point by point, as a beamline's scan would:
``python examples/xrf-map/scan_ioc.py --prefix XRF: --list-pvs``.

The PVs (all with the prefix, default ``XRF:``):

* ``samx``, ``samy``: float, um: the sample motors' positions (readbacks);
* ``mca``: int32 waveform of 2048 channels, counts: the spectrum of the MCA (as an areaDetector
  or the EPICS ``mca`` record serves it, ``.VAL``);
* ``point``: int: the point counter, incremented when the point's spectrum is in (the trigger of
  ``epics_source`` in ``snapshot`` mode).

The scan is the SPEC mesh scan ``data/scan.mca`` (``--scan``; ``make_scan.py``: PyMca's real
steel spectrum scaled per point by a blob, 19 points of 4 x 5, one lost). For each point the IOC
posts ``samx``, ``samy``, then ``mca``, then ``point`` (the order a scan engine posts them),
``--period`` seconds apart. The scan starts once every one of these PVs is monitored by a client
(so a pipeline started after the IOC sees it from its first point) and runs once; the IOC then
serves the last values until it is stopped (Ctrl-C).

Needs ``pip install 'beampipe[epics,xrf]'`` (caproto; PyMca reads the scan file). Serve it on the
loopback interface only with ``EPICS_CAS_INTF_ADDR_LIST=127.0.0.1`` (see README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from caproto.server import PVGroup, pvproperty, run, template_arg_parser

HERE = Path(__file__).resolve().parent
CHANNELS = 2048


def read_scan(path: Path) -> list[tuple[float, float, np.ndarray]]:
    """``(samx, samy, counts)`` of every point of the SPEC scan file ``path``, read with PyMca
    (counts int32, shape (2048,))."""
    from PyMca5.PyMcaIO import specfilewrapper

    scan = specfilewrapper.Specfile(str(path))[0]
    labels = list(scan.alllabels())
    table = np.asarray(scan.data())
    x, y = table[labels.index("samx")], table[labels.index("samy")]
    return [
        (float(x[j]), float(y[j]), np.asarray(scan.mca(j + 1)).astype(np.int32))
        for j in range(scan.nbmca())
    ]


def monitored(prop: object) -> bool:
    """Whether a client monitors the PV ``prop`` (caproto keeps a client's subscriptions per
    queue, sync and data type in ``ChannelData._queues``)."""
    queues = getattr(prop, "_queues", {})
    return any(
        specs for syncs in queues.values() for kinds in syncs.values() for specs in kinds.values()
    )


class ScanIOC(PVGroup):
    """Motor positions, an MCA spectrum and a point counter, posted point by point."""

    samx = pvproperty(value=0.0, units="um", precision=3, doc="Sample motor x readback")
    samy = pvproperty(value=0.0, units="um", precision=3, doc="Sample motor y readback")
    mca = pvproperty(
        value=[0] * CHANNELS, dtype=int, max_length=CHANNELS, units="counts", doc="MCA spectrum"
    )
    point = pvproperty(value=0, doc="Point counter: incremented once the point's spectrum is in")

    def __init__(self, *args, points: list, period: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.points = points
        self.period = period

    @point.startup
    async def point(self, instance, async_lib) -> None:
        pvs = (self.samx, self.samy, self.mca, self.point)
        while not all(monitored(pv) for pv in pvs):
            await async_lib.library.sleep(0.05)
        for n, (x, y, counts) in enumerate(self.points, start=1):
            await self.samx.write(x)
            await self.samy.write(y)
            await self.mca.write(counts)
            await self.point.write(n)
            await async_lib.library.sleep(self.period)


def main() -> None:
    parser, split_args = template_arg_parser(default_prefix="XRF:", desc=ScanIOC.__doc__)
    parser.add_argument("--scan", type=Path, default=HERE / "data" / "scan.mca")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between points")
    args = parser.parse_args()
    ioc_options, run_options = split_args(args)
    ioc = ScanIOC(points=read_scan(args.scan), period=args.period, **ioc_options)
    run(ioc.pvdb, **run_options)


if __name__ == "__main__":
    main()
