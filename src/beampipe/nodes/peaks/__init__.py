"""Serial crystallography: Bragg peak and hit finding (``peaks.find``), the hit rate per stream
(``hit_rate``) and the CXI files CrystFEL reads (``cxi_writer``)."""
