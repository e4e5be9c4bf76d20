"""Pure decoders: what devices send, as bytes, becomes :class:`Reading` values.

Nothing in this package does I/O, reads a clock or touches asyncio: the caller passes the
receive time. A test keeps it that way.
"""

from devices.reading import DecodeError, FieldValue, Reading

__all__ = ["DecodeError", "FieldValue", "Reading"]
