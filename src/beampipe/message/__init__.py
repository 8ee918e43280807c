"""Messages, stream markers and their wire encoding."""

from beampipe.message.model import EndOfStream, Event, Item, Message, StreamStart
from beampipe.message.wire import WireError, decode, encode

__all__ = [
    "EndOfStream",
    "Event",
    "Item",
    "Message",
    "StreamStart",
    "WireError",
    "decode",
    "encode",
]
