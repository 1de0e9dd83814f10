"""Reading untrusted request values: query integers and text that must be valid UTF-8.

Each check here once answered 500 for some input (str.isdigit() accepts '²', which int()
refuses; invalid UTF-8 on the wire arrives as lone surrogates that Redis, NATS and hashing
cannot encode), so every handler reads such values through these.
"""

from aiohttp import web

from pixq.errors import ErrorCode, PixqError

MAX_DIGITS = 12
"""Longer digit strings are refused before int() (which also refuses past 4300 digits)."""


def int_query(request: web.Request, name: str, default: int, lower: int, upper: int) -> int:
    """``?name=`` as an integer from lower to upper (ASCII digits only), or INVALID_PARAMETERS."""
    raw = request.query.get(name, str(default))
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_DIGITS or not lower <= int(raw) <= upper:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, f"{name} must be an integer from {lower} to {upper}")
    return int(raw)


def is_utf8(text: str) -> bool:
    """False for text holding lone surrogates (how aiohttp and json hand over invalid UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
