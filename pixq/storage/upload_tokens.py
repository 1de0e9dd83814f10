"""Signed, expiring upload tokens: local storage's stand-in for an S3 presigned POST.

``POST /api/v1/uploads`` (authenticated by API key) mints one; ``POST /uploads/{token}`` is
authorized by the token alone, the way S3 accepts a presigned POST from anyone holding it. A
token is:

- **signed**: HMAC-SHA256 with a key derived from URL_SIGNING_KEY (shared by every API
  replica already), under its own label, so an upload token is never a valid download
  signature or stream token, nor either of those an upload token;
- **bound**: to one tenant and one upload id, hence one storage key
  (``uploads/<tenant>/<upload_id>``), and to the content type the client named, if any;
- **expiring**: UPLOAD_TTL after it was minted, like the presigned POST policy.

Format: ``u1.<base64url JSON claims>.<base64url HMAC>``, URL-safe as it stands. The claims are
not secret (tenant, upload id, expiry, content type) but cannot be altered.
"""

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

VERSION = "u1"
MAX_TOKEN_CHARS = 2048
"""Anything longer was not minted here; refused before decoding."""
_DERIVATION = b"pixq upload token v1"


@dataclass(frozen=True)
class UploadGrant:
    """What a valid token allows: one object, for one tenant, until ``expires_at``."""

    tenant: str
    upload_id: str
    expires_at: int
    content_type: str | None


def _key(signing_key: bytes) -> bytes:
    return hmac.new(signing_key, _DERIVATION, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(signing_key: bytes, tenant: str, upload_id: str, ttl: float, content_type: str | None = None,
         now: float | None = None) -> tuple[str, int]:
    """A token for one upload, and its expiry (Unix seconds)."""
    expires_at = int((time.time() if now is None else now) + ttl)
    claims = {"t": tenant, "u": upload_id, "e": expires_at, "c": content_type}
    body = f"{VERSION}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    signature = hmac.new(_key(signing_key), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}", expires_at


def verify(signing_key: bytes, token: str, now: float | None = None) -> UploadGrant | None:
    """The grant of a genuine, unexpired token; None for anything else (never raises)."""
    if not token.isascii() or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return None
    version, payload, signature = token.split(".")
    if version != VERSION:
        return None
    expected = hmac.new(_key(signing_key), f"{version}.{payload}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    tenant, upload_id, expires_at, content_type = claims.get("t"), claims.get("u"), claims.get("e"), claims.get("c")
    if not (isinstance(tenant, str) and isinstance(upload_id, str) and isinstance(expires_at, int)
            and (content_type is None or isinstance(content_type, str))):
        return None
    if expires_at <= (time.time() if now is None else now):
        return None
    return UploadGrant(tenant=tenant, upload_id=upload_id, expires_at=expires_at, content_type=content_type)
