"""X-ray absorption spectroscopy: ``xdi_replay``, ``xas.transmission``, ``xas.normalize``,
``xas.exafs`` and ``xas.merge``."""
