"""X-ray fluorescence: ``xrf.fit`` (:mod:`.fit`, fitting spectra with PyMca; extra ``xrf``) and
``map`` (:mod:`.raster`, element maps on a regular raster)."""
