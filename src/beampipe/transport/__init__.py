"""Moving messages between node processes (ZeroMQ)."""

from beampipe.transport.zeromq import InputChannel, OutputPort, TransportError

__all__ = ["InputChannel", "OutputPort", "TransportError"]
