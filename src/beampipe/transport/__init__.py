"""Moving messages between node processes (ZeroMQ).

:mod:`~beampipe.transport.protocol` is the wire protocol of a pipe (its frame kinds, their
encoding and decoding); :mod:`~beampipe.transport.output` the sending end of an output port,
with :mod:`~beampipe.transport.routing` (which replica gets a message),
:mod:`~beampipe.transport.peer` (one pipe as its sender sees it) and
:mod:`~beampipe.transport.batching` (small items several per ZeroMQ message);
:mod:`~beampipe.transport.input` the receiving end of a pipe; :mod:`~beampipe.transport.address`
the addresses other hosts connect to.
"""

from beampipe.transport.input import InputChannel
from beampipe.transport.output import OutputPort
from beampipe.transport.protocol import TransportError, wire_size
from beampipe.transport.routing import Route

__all__ = ["InputChannel", "OutputPort", "Route", "TransportError", "wire_size"]
