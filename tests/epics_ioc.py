"""A tiny caproto soft IOC for the EPICS connector tests: ``python tests/epics_ioc.py --prefix P:``.

The PVs (all with the prefix):

* ``RingCurrent``: float, mA, writeable (the tests play the machine); alarms below 50 mA
  (MINOR, LOW) and 5 mA (MAJOR, LOLO).
* ``I0``: int, counts, writeable (an ion-chamber counter).
* ``Motor``: float, mm, writeable (a motor's position readback).
* ``Spectrum``: float array of up to 8 values, writeable.
* ``Shutter``: enum (``CLOSED``, ``OPEN``), writeable.
* ``Gap``: float, mm, writeable within 0-10 mm (the IOC refuses other values).
* ``MachineState``: string, read-only over Channel Access (a put fails: no write access).
* ``Quality``: float, writeable; every value written to it is also appended to
* ``QualityHistory``: float array (up to 100 values, read-only): what the control system
  received, in order.

Start it with the EPICS_CA_* / EPICS_CAS_* environment of the test, e.g.
``EPICS_CAS_INTF_ADDR_LIST=127.0.0.1 EPICS_CA_SERVER_PORT=...``.
"""

from __future__ import annotations

from caproto import ChannelType
from caproto.server import PVGroup, ioc_arg_parser, pvproperty, run


class BeamlineIOC(PVGroup):
    """Ring current, I0 counter, motor position, a spectrum and a writeable quality figure."""

    RingCurrent = pvproperty(
        value=100.0,
        units="mA",
        precision=3,
        lower_warning_limit=50.0,
        lower_alarm_limit=5.0,
        upper_warning_limit=500.0,
        upper_alarm_limit=1000.0,
        doc="Ring current; below 50 mA a MINOR (LOW) alarm, below 5 mA a MAJOR (LOLO) one",
    )
    I0 = pvproperty(value=0, units="counts", doc="I0 counter")
    Motor = pvproperty(value=0.0, units="mm", precision=4, doc="Motor position readback")
    Spectrum = pvproperty(value=[0.0] * 8, max_length=8, doc="A short spectrum")
    Shutter = pvproperty(
        value="CLOSED", enum_strings=["CLOSED", "OPEN"], dtype=ChannelType.ENUM, doc="Shutter"
    )
    MachineState = pvproperty(
        value="USER", read_only=True, report_as_string=True, max_length=40, doc="Machine state"
    )
    Gap = pvproperty(
        value=5.0, units="mm", lower_ctrl_limit=0.0, upper_ctrl_limit=10.0, doc="Limits 0-10 mm"
    )
    Quality = pvproperty(value=0.0, doc="Quality figure written by the pipeline")
    QualityHistory = pvproperty(
        value=[], dtype=float, max_length=100, read_only=True, doc="Every value put to Quality"
    )

    @Quality.putter
    async def Quality(self, instance, value):
        history = [*self.QualityHistory.value, value][-100:]
        await self.QualityHistory.write(history)
        return value


if __name__ == "__main__":
    ioc_options, run_options = ioc_arg_parser(default_prefix="BPTEST:", desc=BeamlineIOC.__doc__)
    ioc = BeamlineIOC(**ioc_options)
    run(ioc.pvdb, **run_options)
