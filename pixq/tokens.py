"""Signed, expiring claims in a URL-safe token: what stream tokens and upload tokens share.

Format: ``<version>.<base64url JSON claims>.<base64url HMAC-SHA256>``. The HMAC key is derived
from URL_SIGNING_KEY (shared by every API replica) under a label per kind of token, so a token
of one kind is never valid as another, nor as a download-link signature. The claims are not
secret but cannot be altered; ``e`` holds the expiry (Unix seconds).
"""

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any


def _key(signing_key: bytes, label: bytes) -> bytes:
    return hmac.new(signing_key, label, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(signing_key: bytes, label: bytes, version: str, claims: dict[str, Any], ttl: float,
         now: float | None = None) -> tuple[str, int]:
    """A token carrying ``claims`` plus its expiry, and that expiry (Unix seconds)."""
    expires_at = int((time.time() if now is None else now) + ttl)
    body = f"{version}.{_b64(json.dumps({**claims, 'e': expires_at}, separators=(',', ':')).encode())}"
    signature = hmac.new(_key(signing_key, label), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}", expires_at


def open_claims(signing_key: bytes, label: bytes, version: str, token: str, max_chars: int,
                now: float | None = None) -> dict[str, Any] | None:
    """The claims of a genuine, unexpired token of this kind; None for anything else (never raises)."""
    if not token.isascii() or len(token) > max_chars or token.count(".") != 2:
        return None
    token_version, payload, signature = token.split(".")
    if token_version != version:
        return None
    expected = hmac.new(_key(signing_key, label), f"{version}.{payload}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("e"), int):
        return None
    if claims["e"] <= (time.time() if now is None else now):
        return None
    return claims
