"""Signed, expiring download URLs for the local storage backend (the API serves them)."""

import hashlib
import hmac
import time
from urllib.parse import quote


EXPIRES_MAX_DIGITS = 15
"""A Unix time in seconds has 10 digits until the year 2286; longer is not a link we minted."""


def sign(key: bytes, storage_key: str, expires: int) -> str:
    # surrogatepass: a path with invalid UTF-8 (decoded to lone surrogates) still gets a
    # digest, which simply never matches; identical to strict UTF-8 for every real key.
    message = f"{storage_key}\n{expires}".encode("utf-8", "surrogatepass")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_path(key: bytes, storage_key: str, ttl: float, now: float | None = None) -> str:
    """Path and query of a download link valid for ``ttl`` seconds."""
    expires = int((now or time.time()) + ttl)
    return f"/files/{quote(storage_key)}?expires={expires}&sig={sign(key, storage_key, expires)}"


def verify(key: bytes, storage_key: str, expires: str, signature: str, now: float | None = None) -> bool:
    """True when the signature matches and the link has not expired.

    Any malformed ``expires`` or ``signature`` is simply False: ASCII digits only (str.isdigit()
    accepts '²', which int() refuses, and int() refuses over 4300 digits), and an ASCII
    signature (hmac.compare_digest raises TypeError on non-ASCII str)."""
    if not (expires.isascii() and expires.isdigit()) or len(expires) > EXPIRES_MAX_DIGITS:
        return False
    if int(expires) < (now or time.time()) or not signature.isascii():
        return False
    return hmac.compare_digest(sign(key, storage_key, int(expires)), signature)
