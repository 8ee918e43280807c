"""Replays of data files, one stream per file: ``hdf5_replay``, and finding the files."""
