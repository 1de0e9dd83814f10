"""Short-lived signed tokens that open an SSE stream from a browser.

A browser's EventSource cannot send an Authorization header, so a page first asks the API
(authenticated normally, ``POST /api/v1/events/token``) for a token and puts it in the
stream's URL as ``?access_token=``. A token is:

- **signed**: HMAC-SHA256 with a key derived from URL_SIGNING_KEY, which every API replica
  shares already (download links), so any replica accepts what another minted. The key is
  derived (not used as is) so a token can never be mistaken for a download signature;
- **short-lived**: EVENTS_TOKEN_TTL (300 s); it is only needed to *open* a stream, and a
  URL with a credential in it ends up in browser history;
- **tenant-bound**: it names the tenant and its role, and the API checks both still hold
  when the token is used, so a deleted or demoted tenant's tokens stop working at once;
- optionally **job-bound**: then it opens that job's stream and nothing else.

Format (pixq.tokens): ``v1.<base64url JSON claims>.<base64url HMAC>``, URL-safe as it stands.
The claims are not secret (a tenant name, a job id, an expiry) but cannot be altered.
"""

from dataclasses import dataclass

from pixq import tokens

VERSION = "v1"
MAX_TOKEN_CHARS = 1024
"""Anything longer was not minted here; refused before decoding."""
_DERIVATION = b"pixq stream token v1"


@dataclass(frozen=True)
class StreamGrant:
    """What a valid token allows: the tenant it speaks for, and the one job if it is bound."""

    tenant: str
    role: str
    job_id: str | None
    expires_at: int


def mint(signing_key: bytes, tenant: str, role: str, job_id: str | None, ttl: float,
         now: float | None = None) -> tuple[str, int]:
    """A token for ``tenant`` (and ``job_id`` if given), and its expiry (Unix seconds)."""
    return tokens.sign(signing_key, _DERIVATION, VERSION, {"t": tenant, "r": role, "j": job_id}, ttl, now)


def verify(signing_key: bytes, token: str, now: float | None = None) -> StreamGrant | None:
    """The grant of a genuine, unexpired token; None for anything else (never raises)."""
    claims = tokens.open_claims(signing_key, _DERIVATION, VERSION, token, MAX_TOKEN_CHARS, now)
    if claims is None:
        return None
    tenant, role, job_id = claims.get("t"), claims.get("r"), claims.get("j")
    if not (isinstance(tenant, str) and isinstance(role, str) and (job_id is None or isinstance(job_id, str))):
        return None
    return StreamGrant(tenant=tenant, role=role, job_id=job_id, expires_at=claims["e"])
