"""Moving messages between node processes (ZeroMQ)."""

from beampipe.transport.zeromq import InputChannel, OutputPort, Route, TransportError

__all__ = ["InputChannel", "OutputPort", "Route", "TransportError"]
