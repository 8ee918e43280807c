"""NeXus/HDF5 files: ``nexus_writer`` and its helpers."""
