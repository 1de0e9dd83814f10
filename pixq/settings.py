"""Configuration from environment variables (documented in README.md, 'Configuration').

One Settings object serves the API, the workers and the CLI. Every field has a default
so `make up` runs with nothing set; a bad value stops the process at start with the
variable's name (see ``load_settings``).

Every variable that holds a secret (SECRET_FIELDS) may instead name a file in
``<NAME>_FILE``, the Kubernetes and Docker secret-file convention. Placeholder secrets
(``CHANGE_ME``, or MinIO's default ``minioadmin`` with S3 storage) stop the process.
"""

import ipaddress
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from limits import RateLimitItem, parse_many
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pixq.eventloop import EventLoop
from pixq.units import parse_duration, parse_duration_list, parse_size

Duration = Annotated[float, BeforeValidator(parse_duration)]
DurationList = Annotated[list[float], NoDecode, BeforeValidator(parse_duration_list)]
Size = Annotated[int, BeforeValidator(parse_size)]


def parse_api_keys(value: str | dict | None) -> dict[str, str]:
    """Parse ``name=secret,name2=secret2`` into {secret: name}, so lookups go by the bearer token."""
    if isinstance(value, dict):
        return value
    keys: dict[str, str] = {}
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, secret = item.partition("=")
        if not sep or not name.strip() or not secret.strip():
            raise ValueError("expected name=secret,name2=secret2")
        keys[secret.strip()] = name.strip()
    return keys


ApiKeys = Annotated[dict[str, str], NoDecode, BeforeValidator(parse_api_keys)]

RATE_LIMIT_OFF = "off"
REQUEUE_CHECK_AFTER_MIN = 16.0
"""REQUEUE_CHECK_AFTER's floor: above the longest a live API spends publishing one job
(pixq.publish: a 5 s first publish, then 10 s of re-sends), so a requeue never races it."""


def parse_rate_limit(value: str) -> list[RateLimitItem]:
    """A request rate in the ``limits`` notation (``100/second``, ``5000/minute``, several joined
    by ``;``) as ``limits`` items, shortest window first; empty or ``off`` is no limit ([]).

    Refused, so a typo cannot turn into a limit nobody meant: a zero amount or window (it would
    refuse every request; write ``off`` for none) and two limits over the same window."""
    text = value.strip()
    if text.lower() in ("", RATE_LIMIT_OFF):
        return []
    try:
        items = parse_many(text)
    except ValueError:
        raise ValueError(f"{text!r} is not in the limits notation, e.g. 100/second or "
                         "10/second;5000/hour (or off)") from None
    windows = [item.get_expiry() for item in items]
    if any(item.amount < 1 for item in items) or min(windows) < 1:
        raise ValueError(f"{text!r}: amounts and windows must be at least 1 (off disables the limit)")
    if len(set(windows)) != len(windows):
        raise ValueError(f"{text!r}: give each window one limit")
    return sorted(items, key=lambda item: item.get_expiry())


def parse_host_ports(value: str | list | None) -> list[tuple[str, int]]:
    """Comma-separated ``host:port`` addresses (``[::1]:26379`` for IPv6) as (host, port) pairs;
    REDIS_SENTINELS. A missing or out-of-range port is refused: sentinels have no default port
    worth guessing (26379 is only a convention)."""
    if isinstance(value, list):
        return [(str(host), int(port)) for host, port in value]
    addresses: list[tuple[str, int]] = []
    for item in filter(None, (part.strip() for part in (value or "").split(","))):
        host, sep, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r}: expected host:port,host:port (e.g. 10.0.0.5:26379,[fd00::5]:26379)")
        addresses.append((host, int(port)))
    return addresses


HostPorts = Annotated[list[tuple[str, int]], NoDecode, BeforeValidator(parse_host_ports)]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> list[IpNetwork]:
    """Comma-separated addresses or CIDRs (``10.0.0.0/8,fd00::/8,192.0.2.7``). A CIDR with
    host bits set (``10.0.0.5/8``) is refused rather than guessed at."""
    networks: list[IpNetwork] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"expected comma-separated addresses or CIDRs: {exc}") from None
    return networks


SECRET_FIELDS = ("nats_url", "redis_url", "redis_sentinel_password", "minio_access_key", "minio_secret_key",
                 "url_signing_key", "api_keys", "admin_api_keys", "webhook_secrets", "img_key", "img_salt")
"""Settings that may hold a secret: each also accepts ``<NAME>_FILE`` and refuses placeholders."""

PLACEHOLDER = "CHANGE_ME"
MINIO_DEFAULT_CREDENTIAL = "minioadmin"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    # Dependencies (credentials may sit in the URLs: nats://user:pass@host, redis://:pass@host)
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream_replicas: int = Field(1, ge=1, le=5)
    nats_creds_file: Path | None = None
    nats_nkey_seed_file: Path | None = None
    nats_tls_ca_file: Path | None = None
    nats_tls_cert_file: Path | None = None
    nats_tls_key_file: Path | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_tls_ca_file: Path | None = None
    redis_sentinels: HostPorts = []
    redis_sentinel_master: str = ""
    redis_sentinel_password: str = ""
    redis_wait_replicas: int = Field(0, ge=0, le=16)
    redis_wait_timeout: Duration = 0.1

    # Object storage
    storage_type: Literal["local", "minio"] = "local"
    storage_endpoint: str = "127.0.0.1:9000"
    storage_secure: bool = False
    storage_region: str = "us-east-1"
    storage_public_endpoint: str = ""
    minio_access_key: str = "minioadmin"
    minio_secret_key: str = "minioadmin"
    bucket_name: str = Field("pixq", min_length=3, max_length=63)
    storage_dir: Path = Path(".pixq/storage")
    storage_ca_file: Path | None = None
    storage_sse: str = ""

    # API
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)
    api_keys: ApiKeys = {}
    admin_api_keys: ApiKeys = {}
    tenants_file: Path | None = None
    api_allow_open: bool = False
    url_signing_key: str = ""
    url_ttl: Duration = 3600.0
    idempotency_ttl: Duration = 86400.0
    api_shutdown_grace: Duration = 10.0

    # Limits, quotas and priorities (docs/api.md)
    rate_limit: str = "100/second"
    rate_limit_per_ip: str = "200/second"
    rate_limit_timeout: Duration = 0.05
    trusted_proxies: str = ""
    max_jobs_in_flight: int = Field(10_000, ge=1)
    max_request_bytes: Size = 64 * 1024 * 1024
    priority_weights: str = "interactive=4,batch=1"

    # Notifications (docs/notifications.md)
    public_url: str = ""
    events_max_age: Duration = 72 * 3600.0
    events_max_bytes: Size = 512 * 1024**2
    events_heartbeat: Duration = 15.0
    events_token_ttl: Duration = 300.0
    events_hub_linger: Duration = 30.0
    """How long an API process keeps reading PIXQ_EVENTS after its last listener left (api.events_hub)."""
    webhook_secrets: str = ""
    webhook_timeout: Duration = 10.0
    webhook_concurrency: int = Field(16, ge=1, le=1024)
    webhook_backoff: DurationList = [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0,
                                     12 * 3600.0, 24 * 3600.0]
    outbound_allow_private_networks: bool = False

    # Inputs (docs/inputs.md)
    upload_ttl: Duration = 3600.0
    upload_retention: Duration = 86400.0
    upload_sweep_interval: Duration = 600.0
    pending_input_grace: Duration = 600.0
    """An upload whose submit is still unfinished after this long is its API's leftover (pixq.pending_inputs)."""
    pending_input_sweep_interval: Duration = 60.0
    requeue_check_after: Duration = 30.0
    """A job recorded this long ago that no worker has begun is published again from the message
    its API kept (pixq.intake.requeue_unpublished): its API may have died before publishing it."""
    requeue_check_interval: Duration = 10.0
    source_allowed_hosts: str = ""
    source_allow_http: bool = False
    source_timeout: Duration = 30.0
    presets_file: Path | None = None
    ingest_dedupe_ttl: Duration = 7 * 86400.0

    # /img URLs: imgproxy's format and signature (docs/on-the-fly.md, pixq.imgproxy)
    img_key: str = ""
    """Hex HMAC keys, comma-separated (the first signs; later ones are still accepted: rotation)."""
    img_salt: str = ""
    """Hex salts, one per IMG_KEY key, in the same order."""
    img_signature_size: int = Field(32, ge=1, le=32)
    img_presets: str = ""
    """``name=opt:a/opt:b;name2=...``; a preset called ``default`` applies to every URL."""
    img_allow_unsigned: bool = False
    """No IMG_KEY: serve /img with any signature segment (``insecure``). Never in production."""

    # /img serving and cache (docs/on-the-fly.md, "Serving and cache")
    img_tenant: str = "default"
    """Whose jobs, quota and cache the public /img URLs use (they carry no API key)."""
    img_wait: Duration = 10.0
    img_cache_max_age: Duration = 365 * 86400.0
    img_auto_webp: bool = False
    img_auto_avif: bool = False
    img_hit_redirect: bool = False
    """S3 storage: answer a cache hit with a 307 to a presigned GET (URL_TTL) instead of the bytes."""

    # Worker
    metrics_port: int = Field(9091, ge=0, le=65535)
    worker_concurrency: int = Field(2, ge=1, le=256)
    max_retries: int = Field(5, ge=0, le=100)
    retry_backoff: DurationList = [0.0, 2.0, 8.0, 30.0]
    job_timeout: Duration = 60.0
    ack_wait: Duration = 30.0
    worker_shutdown_grace: Duration = 25.0
    outage_hold_max: Duration = 300.0
    vips_concurrency: int = Field(1, ge=1, le=64)
    vips_cache_max_ops: int = Field(0, ge=0)
    reuse_outputs: bool = True
    """A job with the same input bytes and spec as an earlier completed job of its tenant is
    completed from that job's stored outputs (worker.reuse)."""

    # Input limits (hostile input)
    max_input_bytes: Size = 50 * 1024 * 1024
    max_input_pixels: int = Field(50_000_000, ge=1)
    max_output_pixels: int = Field(50_000_000, ge=1)
    max_animation_frames: int = Field(100, ge=1)
    enable_untrusted_loaders: bool = False

    # Logging
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Runtime
    event_loop: EventLoop = "uvloop"

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: str) -> str:
        return value.lower() if isinstance(value, str) else value

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str) -> str:
        for url in value.split(","):
            if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError("expected nats://host:port (comma-separated for a cluster)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected redis://host:port/db")
        return value

    @field_validator("redis_sentinel_master")
    @classmethod
    def _sentinel_master(cls, value: str) -> str:
        if value != value.strip() or any(char.isspace() for char in value):
            raise ValueError("expected the master's name as in the sentinels' 'sentinel monitor <name> ...' line")
        return value

    @field_validator("rate_limit", "rate_limit_per_ip")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_rate_limit(value)  # ValueError says what is wrong
        return value.strip()

    @field_validator("requeue_check_after")
    @classmethod
    def _requeue_check_after(cls, value: float) -> float:
        if value < REQUEUE_CHECK_AFTER_MIN:
            raise ValueError(f"must be at least {REQUEUE_CHECK_AFTER_MIN:g}s, longer than an API spends publishing "
                             "a job (its first publish and the re-sends that resolve a lost ack)")
        return value

    @field_validator("rate_limit_timeout")
    @classmethod
    def _rate_limit_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be above 0 (0 would skip every check: set RATE_LIMIT=off instead)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        return ",".join(str(network) for network in parse_networks(value))

    @field_validator("storage_endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("expected host:port, without a scheme")
        return value

    @field_validator("storage_sse")
    @classmethod
    def _sse(cls, value: str) -> str:
        if value and value != "s3" and not (value.startswith("kms:") and len(value) > 4):
            raise ValueError("expected empty, s3 or kms:<key-id>")
        return value

    @field_validator("nats_creds_file", "nats_nkey_seed_file", "nats_tls_ca_file", "nats_tls_cert_file",
                     "nats_tls_key_file", "redis_tls_ca_file", "storage_ca_file", "tenants_file",
                     "presets_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and str(value) and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}")
        return value or None

    @field_validator("presets_file")
    @classmethod
    def _presets(cls, value: Path | None) -> Path | None:
        """Parse PRESETS_FILE now, so a bad file stops the process at start (pixq.presets)."""
        if value is not None:
            from pydantic_core import PydanticCustomError

            from pixq.presets import read_catalogue  # imported here: pixq.presets reads Settings

            try:
                read_catalogue(value)
            except ValueError as exc:
                raise PydanticCustomError("presets_file", "{reason}", {"reason": str(exc)}) from None
        return value

    @field_validator("priority_weights")
    @classmethod
    def _priority_weights(cls, value: str) -> str:
        from pixq.jobs import parse_priority_weights  # pixq.jobs imports the spec models, not Settings

        weights = parse_priority_weights(value)  # ValueError says what is wrong
        return ",".join(f"{lane.value}={weight}" for lane, weight in weights.items())

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("expected http(s)://host[:port], the API's address as clients reach it")
        return value.rstrip("/")

    @field_validator("source_allowed_hosts")
    @classmethod
    def _source_hosts(cls, value: str) -> str:
        from pixq.hostglobs import parse_globs

        return ",".join(parse_globs(value))  # ValueError names the bad glob

    @field_validator("webhook_secrets")
    @classmethod
    def _whsec(cls, value: str) -> str:
        from pixq.webhooks import secret_key  # imported here: pixq.webhooks reads Settings

        for secret in filter(None, (item.strip() for item in value.split(","))):
            if PLACEHOLDER.lower() in secret.lower():
                continue  # refused with the variable's name by _no_placeholders
            try:
                secret_key(secret)
            except ValueError as exc:
                raise ValueError(f"expected comma-separated whsec_<base64> secrets (Standard Webhooks): {exc}") from None
        return value

    @field_validator("img_key", "img_salt")
    @classmethod
    def _img_hex(cls, value: str) -> str:
        from pixq.imgproxy import parse_hex_list  # imported here: pixq.imgproxy reads Settings

        if PLACEHOLDER.lower() not in value.lower():  # refused with the variable's name by _no_placeholders
            parse_hex_list(value)  # ValueError says which item is wrong
        return value

    @field_validator("img_presets")
    @classmethod
    def _img_presets(cls, value: str) -> str:
        from pixq.imgproxy import parse_presets

        parse_presets(value)  # ValueError names the preset and the option
        return value

    @model_validator(mode="after")
    def _img_signing(self) -> "Settings":
        if PLACEHOLDER.lower() in f"{self.img_key}{self.img_salt}".lower():
            return self  # refused with the variable's name by _no_placeholders
        keys = len([item for item in self.img_key.split(",") if item.strip()])
        salts = len([item for item in self.img_salt.split(",") if item.strip()])
        if keys != salts:
            raise ValueError(f"IMG_SALT: IMG_KEY has {keys} key(s) and IMG_SALT {salts} salt(s); give one salt per key, "
                             "in the same order")
        if keys and self.img_allow_unsigned:
            raise ValueError("IMG_ALLOW_UNSIGNED: set IMG_KEY (signed URLs) or IMG_ALLOW_UNSIGNED=true, not both")
        return self

    @model_validator(mode="after")
    def _no_placeholders(self) -> "Settings":
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            texts = [*value.keys(), *value.values()] if isinstance(value, dict) else [str(value)]
            if any(PLACEHOLDER.lower() in text.lower() for text in texts):
                raise ValueError(f"{name.upper()}: holds the placeholder {PLACEHOLDER}; set a real secret")
        if self.storage_type == "minio":
            for name in ("minio_access_key", "minio_secret_key"):
                if getattr(self, name) == MINIO_DEFAULT_CREDENTIAL:
                    raise ValueError(f"{name.upper()}: the default minioadmin credentials are refused with S3 storage")
            if self.storage_ca_file and not self.storage_secure:
                raise ValueError("STORAGE_CA_FILE: needs STORAGE_SECURE=true (the CA verifies HTTPS)")
            if self.storage_sse.startswith("kms:") and not self.storage_secure:
                raise ValueError("STORAGE_SSE: kms needs STORAGE_SECURE=true (S3 accepts SSE-KMS over HTTPS only)")
        if self.redis_tls_ca_file and not self.redis_url.startswith("rediss://"):
            raise ValueError("REDIS_TLS_CA_FILE: needs a rediss:// REDIS_URL (the CA verifies TLS)")
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("REDIS_SENTINEL_MASTER: needed with REDIS_SENTINELS (the master's name in the "
                             "sentinels' configuration)")
        if self.redis_sentinel_master and not self.redis_sentinels:
            raise ValueError("REDIS_SENTINELS: needed with REDIS_SENTINEL_MASTER (host:port of each sentinel)")
        if self.redis_sentinels and self.redis_url.startswith("unix://"):
            raise ValueError("REDIS_URL: unix:// cannot be used with REDIS_SENTINELS (the sentinels name the "
                             "master by host and port; REDIS_URL gives only credentials, db and TLS)")
        if (self.nats_tls_cert_file is None) != (self.nats_tls_key_file is None):
            raise ValueError("NATS_TLS_CERT_FILE: set NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE together")
        if self.nats_creds_file and self.nats_nkey_seed_file:
            raise ValueError("NATS_CREDS_FILE: set NATS_CREDS_FILE or NATS_NKEY_SEED_FILE, not both")
        return self

    def public_base_url(self) -> str:
        """Where clients reach the API, for links minted outside a request (webhooks)."""
        return self.public_url or f"http://{self.api_host}:{self.api_port}"

    def webhook_secret_list(self) -> list[str]:
        return [item.strip() for item in self.webhook_secrets.split(",") if item.strip()]

    def signing_key(self) -> bytes:
        """Key for the local backend's signed download URLs; random per process if unset."""
        if not self.url_signing_key:
            self.url_signing_key = secrets.token_hex(32)
        return self.url_signing_key.encode()


class ConfigError(SystemExit):
    """Raised instead of a traceback: the message names each bad variable."""


def fail_config(name: str, reason: str) -> ConfigError:
    """Print ``invalid configuration: NAME: reason`` and return the exit to raise."""
    print(f"invalid configuration: {name}: {reason}", file=sys.stderr)
    return ConfigError(2)


def secret_file_values(environ: Mapping[str, str]) -> dict[str, str]:
    """Values of SECRET_FIELDS read from the files named by ``<NAME>_FILE`` (trailing newline dropped)."""
    values: dict[str, str] = {}
    for field_name in SECRET_FIELDS:
        name = field_name.upper()
        path = environ.get(f"{name}_FILE")
        if not path:
            continue
        if environ.get(name):
            raise fail_config(f"{name}_FILE", f"set {name} or {name}_FILE, not both")
        try:
            values[field_name] = Path(path).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise fail_config(f"{name}_FILE", f"cannot read {path}: {exc}") from None
        if not values[field_name].strip():
            raise fail_config(f"{name}_FILE", f"{path} is empty")
    return values


def load_settings(**overrides) -> Settings:
    """Read the environment; on a bad value exit with ``invalid configuration: NAME: reason``."""
    try:
        return Settings(**{**secret_file_values(os.environ), **overrides})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            if error["loc"]:
                lines.append(f"invalid configuration: {str(error['loc'][0]).upper()}: {error['msg']}")
            else:  # a model-level check names its variable first: "NAME: reason"
                lines.append(f"invalid configuration: {error['msg'].removeprefix('Value error, ')}")
        print("\n".join(lines), file=sys.stderr)
        raise ConfigError(2) from None
