"""The one exception type the codec raises for bad input."""


class DecodeError(ValueError):
    """Bytes that do not decode: truncated, forged length, bad varint, bad UTF-8, bad CRC.

    ``field`` names where decoding stopped (``Message.field``) when known.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message if field is None else f"{field}: {message}")
        self.field = field
