"""Sources and sinks: file replay, detector streams, ASAP::O, NeXus writer, EPICS."""
