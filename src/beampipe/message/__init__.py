"""Messages, stream markers and their wire encoding."""

from beampipe.message.model import EndOfStream, Item, Message, StreamStart
from beampipe.message.wire import WireError, decode, encode

__all__ = ["EndOfStream", "Item", "Message", "StreamStart", "WireError", "decode", "encode"]
