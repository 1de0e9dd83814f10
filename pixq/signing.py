"""Signed, expiring download URLs for the local storage backend (the API serves them)."""

import hashlib
import hmac
import time
from urllib.parse import quote


def sign(key: bytes, storage_key: str, expires: int) -> str:
    message = f"{storage_key}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_path(key: bytes, storage_key: str, ttl: float, now: float | None = None) -> str:
    """Path and query of a download link valid for ``ttl`` seconds."""
    expires = int((now or time.time()) + ttl)
    return f"/files/{quote(storage_key)}?expires={expires}&sig={sign(key, storage_key, expires)}"


def verify(key: bytes, storage_key: str, expires: str, signature: str, now: float | None = None) -> bool:
    """True when the signature matches and the link has not expired."""
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return False
    return hmac.compare_digest(sign(key, storage_key, int(expires)), signature)
