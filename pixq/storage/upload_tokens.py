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

Format (pixq.tokens): ``u1.<base64url JSON claims>.<base64url HMAC>``, URL-safe as it stands. The claims are
not secret (tenant, upload id, expiry, content type) but cannot be altered.
"""

from dataclasses import dataclass

from pixq import tokens

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


def mint(signing_key: bytes, tenant: str, upload_id: str, ttl: float, content_type: str | None = None,
         now: float | None = None) -> tuple[str, int]:
    """A token for one upload, and its expiry (Unix seconds)."""
    claims = {"t": tenant, "u": upload_id, "c": content_type}
    return tokens.sign(signing_key, _DERIVATION, VERSION, claims, ttl, now)


def verify(signing_key: bytes, token: str, now: float | None = None) -> UploadGrant | None:
    """The grant of a genuine, unexpired token; None for anything else (never raises)."""
    claims = tokens.open_claims(signing_key, _DERIVATION, VERSION, token, MAX_TOKEN_CHARS, now)
    if claims is None:
        return None
    tenant, upload_id, content_type = claims.get("t"), claims.get("u"), claims.get("c")
    if not (isinstance(tenant, str) and isinstance(upload_id, str)
            and (content_type is None or isinstance(content_type, str))):
        return None
    return UploadGrant(tenant=tenant, upload_id=upload_id, expires_at=claims["e"], content_type=content_type)
