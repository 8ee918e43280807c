"""Replays of data files, one stream per file: ``hdf5_replay``, and the base of the file replays
(:class:`~beampipe.nodes.files.base.FileReplay`: finding the files, pace, one stream per file)."""
