"""Configuration from environment variables (documented in README.md, 'Configuration').

One Settings object serves the API, the workers and the CLI. Every field has a default
so `make up` runs with nothing set; a bad value stops the process at start with the
variable's name (see ``load_settings``).
"""

import secrets
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    # Dependencies
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream_replicas: int = Field(1, ge=1, le=5)
    redis_url: str = "redis://127.0.0.1:6379/0"

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

    # API
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)
    api_keys: ApiKeys = {}
    admin_api_keys: ApiKeys = {}
    url_signing_key: str = ""
    url_ttl: Duration = 3600.0
    idempotency_ttl: Duration = 86400.0
    api_shutdown_grace: Duration = 10.0

    # Worker
    metrics_port: int = Field(9091, ge=0, le=65535)
    worker_concurrency: int = Field(2, ge=1, le=256)
    max_retries: int = Field(5, ge=0, le=100)
    retry_backoff: DurationList = [0.0, 2.0, 8.0, 30.0]
    job_timeout: Duration = 60.0
    ack_wait: Duration = 30.0
    worker_shutdown_grace: Duration = 25.0
    vips_concurrency: int = Field(1, ge=1, le=64)
    vips_cache_max_ops: int = Field(0, ge=0)

    # Input limits (hostile input)
    max_input_bytes: Size = 50 * 1024 * 1024
    max_input_pixels: int = Field(50_000_000, ge=1)
    max_output_pixels: int = Field(50_000_000, ge=1)
    max_animation_frames: int = Field(100, ge=1)
    enable_untrusted_loaders: bool = False

    # Logging
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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

    @field_validator("storage_endpoint")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("expected host:port, without a scheme")
        return value

    def signing_key(self) -> bytes:
        """Key for the local backend's signed download URLs; random per process if unset."""
        if not self.url_signing_key:
            self.url_signing_key = secrets.token_hex(32)
        return self.url_signing_key.encode()


class ConfigError(SystemExit):
    """Raised instead of a traceback: the message names each bad variable."""


def load_settings(**overrides) -> Settings:
    """Read the environment; on a bad value exit with ``invalid configuration: NAME: reason``."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "?"
            lines.append(f"invalid configuration: {name}: {error['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise ConfigError(2) from None
