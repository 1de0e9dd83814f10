"""/img's result cache: which source a URL names, its cache key, where the result is stored.

A result is content-addressed: its key is a BLAKE3 hash of everything that decides its bytes
(the URL's canonical options, the output format, the source's identity and ETag, the engine
version), so a changed source or a new engine is a new key and nothing stale is ever served;
the old results are simply no longer asked for. Results are stored by source,
``img/<tenant>/<source digest>/<cache key>``, so ``DELETE /api/v1/cache?source=`` removes
everything derived from one source with one prefix delete.

The stored object has no extension: with the "same" format rule the output format is only
known once the worker has read the source, and a hit must find the object without it. The
Content-Type is read back from the object's magic bytes (pixq.sniff.detect_format).

Misses are jobs: the job id is a UUIDv5 of the cache key and the source's purge epoch, so
concurrent misses for one URL name one job (its Nats-Msg-Id ``<job id>:0`` follows from the
cache key), and a miss after a purge is a new job rather than a duplicate the stream drops.
"""

import uuid
from dataclasses import dataclass

import blake3
import redis.asyncio as redis
from redis.exceptions import RedisError

from pixq import names
from pixq.errors import ErrorCode, PixqError, status_unavailable
from pixq.settings import Settings

JOB_NAMESPACE = uuid.UUID("6c0b1f0e-4a1d-5e38-9d51-6e2b7f1a9c40")
"""UUIDv5 namespace of /img job ids (fixed: every API replica must derive the same id)."""


@dataclass(frozen=True)
class Source:
    """Where a URL's image comes from: a key in pixq's storage, or a URL the worker fetches."""

    identity: str
    """What the cache key and the purge name: ``s3://bucket/key``, ``local://key`` or the URL."""
    storage_key: str | None = None
    url: str | None = None

    @property
    def digest(self) -> str:
        return blake3.blake3(self.identity.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def resolve_source(source: str, settings: Settings) -> Source:
    """``s3://<BUCKET_NAME>/key`` (S3 storage) or ``local://key`` (local storage): a key in
    pixq's own store, never another bucket; ``http(s)://``: a URL for the worker to fetch, whose
    SSRF guard and allowlist (pixq.sources) the submit applies. Anything else: SOURCE_REFUSED."""
    scheme, sep, rest = source.partition("://")
    if not sep:
        raise PixqError(ErrorCode.INVALID_REQUEST, "the source must be an absolute URL (s3://, local://, https://)")
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        return Source(identity=source, url=source)
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        if settings.storage_type != "minio" or bucket != settings.bucket_name:
            raise PixqError(ErrorCode.SOURCE_REFUSED,
                            f"s3:// sources must name pixq's own bucket ({settings.bucket_name}) on S3 storage")
        return Source(identity=f"s3://{bucket}/{key}", storage_key=key)
    if scheme == "local":
        if settings.storage_type != "local":
            raise PixqError(ErrorCode.SOURCE_REFUSED, "local:// sources need STORAGE_TYPE=local")
        return Source(identity=f"local://{rest}", storage_key=rest)
    raise PixqError(ErrorCode.SOURCE_REFUSED, f"source scheme {scheme[:20]!r} is not supported "
                    "(s3://, local://, http(s)://)")


def cache_key(canonical: str, output_format: str, source: Source, etag: str, engine: str) -> str:
    """The result's content address. Fields are length-prefixed, so no two tuples collide."""
    digest = blake3.blake3()
    for part in (canonical, output_format, source.identity, etag, engine):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def object_key(tenant: str, source: Source, key: str) -> str:
    return names.img_source_prefix(tenant, source.digest) + key


def job_id(key: str, epoch: int) -> str:
    return str(uuid.uuid5(JOB_NAMESPACE, f"{key}/{epoch}"))


async def epoch(client: redis.Redis, tenant: str, source: Source) -> int:
    """How many times the source was purged (0 when never)."""
    try:
        return int(await client.get(names.img_epoch_key(tenant, source.digest)) or 0)
    except (RedisError, OSError) as exc:
        raise status_unavailable(exc) from None


async def bump_epoch(client: redis.Redis, tenant: str, source: Source) -> None:
    """Start a new epoch: the source's next misses are new jobs. Kept without expiry (one
    small string per purged source): an expired epoch would bring back old job ids."""
    try:
        await client.incr(names.img_epoch_key(tenant, source.digest))
    except (RedisError, OSError) as exc:
        raise status_unavailable(exc) from None


def _accepted(accept: str) -> set[str]:
    """Media types an Accept header accepts (q > 0); wildcards do not count: imgproxy sends
    AVIF or WebP only to a client that names it."""
    types = set()
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            types.add(media.lower())
    return types


def negotiate(accept: str, settings: Settings) -> str | None:
    """The output format Accept chooses for a URL that named none (IMG_AUTO_AVIF first, then
    IMG_AUTO_WEBP, as imgproxy's IMGPROXY_AUTO_*); None keeps the source's ("same")."""
    if not (settings.img_auto_avif or settings.img_auto_webp):
        return None
    accepted = _accepted(accept)
    if settings.img_auto_avif and "image/avif" in accepted:
        return "avif"
    if settings.img_auto_webp and "image/webp" in accepted:
        return "webp"
    return None
