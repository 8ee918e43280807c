"""X-ray fluorescence: ``xrf.fit`` (:mod:`.fit`, fitting spectra with PyMca; extra ``xrf``).
Its element maps are built by the ``map`` reducer (:mod:`beampipe.nodes.reduce.raster`)."""
