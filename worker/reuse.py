"""Work done once: a job whose input bytes and spec match an earlier completed job of the same
tenant is completed from that job's stored outputs, without running libvips (REUSE_OUTPUTS).

Content-addressed. The fingerprint is BLAKE3 over the engine version, the job's normalised spec,
the worker's input limits, then the input bytes:

- the spec is the typed PipelineSpec the API compiled (pixq.spec.to_pipeline: defaults filled,
  aliases resolved), dumped as canonical JSON (sorted keys), so two submits that mean the same
  thing (``quality`` left out or given as 80, ``jpg`` or ``jpeg``) match, and any difference in
  what is asked for (quality 80 against 81) does not;
- the limits are in it because they decide whether a job may run at all: a job the current
  limits refuse must not complete from an earlier job that looser limits let through;
- ENGINE_VERSION (pixq.engine) names the code that made the outputs (see there).

A cryptographic hash, because a tenant's own users must not be able to craft an input that
collides with another user's and receive that user's outputs. BLAKE3 (the ``blake3`` package, the
reference Rust implementation) because every processed job pays for the hash: measured 0.17 ms
per MB, against 0.75 ms for SHA-256 with the CPU's SHA extensions and 1.9 ms for blake2b
(docs/operations.md, "Work done once"); pixq's plumbing budget is 2 ms per job in all.

The index is one Redis string per tenant and fingerprint (pixq.names.reuse_key) holding
``{"job_id", "result"}`` of the latest completed job with that fingerprint, written only after
every output of that job is stored, so a record always points at complete outputs. It lives as
long as job statuses do. Keys are per tenant, and a record's output keys are checked to lie under
the tenant's own prefix before anything is copied: no tenant is ever served another's outputs.

Redis trouble never fails a job: a lookup that fails is a miss, a record that fails is skipped
(a warning each); the job is processed as if reuse were off.
"""

import json
from dataclasses import dataclass, fields

import blake3
import redis.asyncio as redis
import structlog
from pydantic import ValidationError
from redis.exceptions import RedisError

from pixq import names
from pixq.engine import ENGINE_VERSION
from pixq.jobs import JobResult, OutputInfo
from pixq.limits import Limits
from pixq.spec import PipelineSpec

log = structlog.get_logger("pixq.worker")




def fingerprint(data: bytes, spec: PipelineSpec, limits: Limits) -> str:
    """BLAKE3 hex of the engine version, the canonical spec and limits (one JSON line), then the
    input bytes. The JSON line holds no raw newline, so the split between header and bytes is
    unambiguous. Hashing releases the GIL: callers run it in a thread for large inputs."""
    limit_values = {field.name: getattr(limits, field.name) for field in fields(limits)}
    limit_values["allowed_input_formats"] = sorted(limit_values["allowed_input_formats"])
    header = json.dumps({"engine": ENGINE_VERSION, "spec": spec.model_dump(mode="json"), "limits": limit_values},
                        sort_keys=True, separators=(",", ":"))
    digest = blake3.blake3(header.encode() + b"\n")
    digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True)
class Earlier:
    """The latest completed job of a tenant with a given fingerprint, and what it stored."""

    job_id: str
    result: JobResult


class ReuseIndex:
    """Looks up and records completed jobs by fingerprint, in Redis (the worker's status client)."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self.client = client
        self.ttl = max(1, int(ttl))
        """Seconds a record lives: as long as job statuses (pixq.status.StatusStore.job_ttl)."""

    async def lookup(self, tenant: str, digest: str) -> Earlier | None:
        """The tenant's earlier job with this fingerprint, or None (none, unreadable, Redis down)."""
        try:
            raw = await self.client.get(names.reuse_key(tenant, digest))
        except (RedisError, OSError) as exc:
            log.warning("reuse_lookup_failed", tenant=tenant, error=str(exc) or type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            earlier = Earlier(job_id=str(record["job_id"]), result=JobResult.model_validate(record["result"]))
        except (ValueError, KeyError, TypeError, ValidationError):
            log.warning("reuse_record_unreadable", tenant=tenant, key=names.reuse_key(tenant, digest))
            return None
        if not names.is_job_id(earlier.job_id) or not all(
                _is_output_of(output, tenant, earlier.job_id) for output in earlier.result.variants):
            log.warning("reuse_record_foreign", tenant=tenant, earlier_job_id=earlier.job_id)
            return None
        return earlier

    async def record(self, tenant: str, digest: str, job_id: str, result: JobResult) -> None:
        """Remember ``job_id``'s result for this fingerprint; call only once every output is stored."""
        stored = result.model_copy(update={"reused_from": None}).stored()
        try:
            await self.client.set(names.reuse_key(tenant, digest),
                                  json.dumps({"job_id": job_id, "result": stored}, separators=(",", ":")),
                                  ex=self.ttl)
        except (RedisError, OSError) as exc:
            log.warning("reuse_record_failed", tenant=tenant, job_id=job_id, error=str(exc) or type(exc).__name__)


def _is_output_of(output: OutputInfo, tenant: str, job_id: str) -> bool:
    """Is this output stored where ``job_id`` of ``tenant`` writes it (pixq.names.output_object_key)?"""
    _, dot, extension = output.storage_key.rpartition(".")
    return bool(dot) and "/" not in extension and \
        output.storage_key == names.output_object_key(tenant, job_id, output.name, extension)

