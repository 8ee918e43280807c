"""X-ray fluorescence (extra ``xrf``, PyMca5): ``mca_files`` (:mod:`.mcafiles`, spectra from
MCA files and from the HDF5/NeXus files of multi-element detectors, :mod:`.detectors`),
``xrf.deadtime`` (:mod:`.deadtime`, dead-time correction, the sum over the elements and the
positions of the same trigger) and ``xrf.fit`` (:mod:`.fit`, fitting spectra with PyMca). Element
maps are built by the ``map`` reducer (:mod:`beampipe.nodes.reduce.raster`)."""
