"""Detector image files as 2-D frames: ``image_files`` (replay and watch mode), its readers
(fabio, h5py + hdf5plugin), the grouping of files into streams and the watch-mode journal."""
