"""X-ray fluorescence (extra ``xrf``, PyMca5): ``mca_files`` (:mod:`.mcafiles`, spectra from
MCA files) and ``xrf.fit`` (:mod:`.fit`, fitting spectra with PyMca). Element maps are built by
the ``map`` reducer (:mod:`beampipe.nodes.reduce.raster`)."""
