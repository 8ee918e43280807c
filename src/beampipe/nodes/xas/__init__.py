"""X-ray absorption spectroscopy: ``xdi_replay``, ``spec_replay``, ``xas.transmission``,
``xas.calibrate``, ``xas.deglitch``, ``xas.normalize``, ``xas.exafs``, ``xas.merge`` and
``xdi_writer``."""
