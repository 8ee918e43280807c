"""Moving messages between node processes (ZeroMQ)."""

from beampipe.transport.input import InputChannel
from beampipe.transport.protocol import TransportError
from beampipe.transport.zeromq import OutputPort, Route

__all__ = ["InputChannel", "OutputPort", "Route", "TransportError"]
