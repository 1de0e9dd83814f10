"""Tenants: who a caller is, what it may see, and where its objects live.

Every API key belongs to exactly one tenant. TENANTS_FILE (YAML, mounted from a Secret)
declares them; it stores only ``sha256:<hex>`` digests of keys, so the file holds no
usable secret. API_KEYS and ADMIN_API_KEYS remain as the short form for small installs:
``name=secret`` makes (or adds a key to) tenant ``name`` with role user or admin.

With no key configured anywhere the API is open: every caller is the ``default`` tenant
with the admin role (the ``make up`` default, loopback only unless API_ALLOW_OPEN).

Example TENANTS_FILE::

    tenants:
      - name: catalogue
        role: user
        keys: ["sha256:9f86d08188...", "sha256:<next key, during a rotation>"]
        settings:
          storage_prefixes: ["shared/catalogue/"]
      - name: ops
        role: admin
        keys: ["sha256:..."]
"""

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pixq.hostglobs import parse_globs
from pixq.names import TENANT_PATTERN
from pixq.settings import ConfigError, Settings, fail_config, parse_rate_limit
from pixq.webhooks import check_url_form, secret_key

KEY_DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
OPEN_TENANT = "default"
"""The tenant every caller is while no key is configured."""


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class TenantSettings(BaseModel):
    """Per-tenant settings; later features (rate limits, source hosts, webhooks) add fields here."""

    model_config = ConfigDict(extra="allow")

    storage_prefixes: list[str] = Field(default_factory=list)
    """Extra storage prefixes a ``storage_key`` submit may name, beyond the tenant's own."""

    webhook_url: str | None = None
    """Default receiver of the tenant's webhooks, for jobs and batches without a callback_url."""
    webhook_secrets: list[str] = Field(default_factory=list)
    """``whsec_`` secrets signing the tenant's webhooks (several during a rotation); when
    empty, WEBHOOK_SECRETS signs them."""
    source_hosts: list[str] = Field(default_factory=list)
    """Host globs (``images.example.com``, ``*.cdn.example.com``) this tenant's source URLs
    may name, besides SOURCE_ALLOWED_HOSTS (pixq.sources)."""
    rate_limit: str | None = None
    """This tenant's request rate in the ``limits`` notation (``100/second``, ``5000/minute``;
    several joined by ``;``), instead of RATE_LIMIT (api.ratelimit); ``off``: none for this tenant."""
    max_jobs_in_flight: int | None = Field(None, ge=1, strict=True)
    """This tenant's cap on jobs queued, processing or retrying, instead of MAX_JOBS_IN_FLIGHT
    (pixq.quotas). Strict: YAML's ``yes`` or ``"10"`` is a mistake, not a number."""
    megapixels_per_month: float | None = Field(None, gt=0, strict=True, allow_inf_nan=False)
    """Optional budget of input megapixels (width x height) of jobs completed per UTC
    month (pixq.quotas); unset: no budget. Finite, so it can reach the status store's script."""

    @field_validator("source_hosts")
    @classmethod
    def _source_hosts(cls, globs: list[str]) -> list[str]:
        return parse_globs(globs)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        return check_url_form(url)

    @field_validator("webhook_secrets")
    @classmethod
    def _webhook_secrets(cls, secrets: list[str]) -> list[str]:
        for secret in secrets:
            secret_key(secret)  # ValueError names the problem, never the secret
        return secrets

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: str | None) -> str | None:
        """Parsed at start like RATE_LIMIT (``off`` frees this tenant from any rate limit)."""
        if value is None:
            return None
        parse_rate_limit(value)  # ValueError says what is wrong
        return value.strip()

    @field_validator("storage_prefixes")
    @classmethod
    def _relative_prefixes(cls, prefixes: list[str]) -> list[str]:
        for prefix in prefixes:
            if not prefix or prefix.startswith("/") or ".." in prefix.split("/") or not prefix.endswith("/"):
                raise ValueError(f"storage prefix {prefix!r} must be relative and end with '/'")
        return prefixes


class Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=TENANT_PATTERN)
    role: Role = Role.USER
    keys: list[str] = Field(default_factory=list)
    settings: TenantSettings = Field(default_factory=TenantSettings)

    @field_validator("keys")
    @classmethod
    def _digests(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not re.match(KEY_DIGEST_PATTERN, key):
                raise ValueError("each key must be sha256:<64 lowercase hex>, never the key itself")
        return keys

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def own_prefixes(self) -> tuple[str, ...]:
        """Storage prefixes this tenant's jobs write, and so may read back as inputs."""
        return (f"inputs/{self.name}/", f"outputs/{self.name}/", f"uploads/{self.name}/")

    def may_read_object(self, key: str) -> bool:
        """May a ``storage_key`` submit name this object? Admins may name any."""
        if self.is_admin:
            return True
        return key.startswith((*self.own_prefixes(), *self.settings.storage_prefixes))


class TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: list[Tenant]


def key_digest(secret: str) -> str:
    """``sha256:<hex>`` of an API key: what TENANTS_FILE stores and what a request is looked up by."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class TenantDirectory:
    """Every tenant by name, and every key digest to its tenant."""

    tenants: dict[str, Tenant] = field(default_factory=dict)
    by_digest: dict[str, Tenant] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        """No key configured at all: the API accepts anyone as the ``default`` admin tenant."""
        return not self.by_digest

    @property
    def has_admin(self) -> bool:
        return any(tenant.is_admin and tenant.keys for tenant in self.tenants.values())

    def names(self) -> list[str]:
        return sorted(self.tenants) or [OPEN_TENANT]

    def authenticate(self, secret: str) -> Tenant | None:
        """The tenant owning this bearer key, or None. The lookup is by digest, so the
        comparison never runs on the secret itself; compare_digest guards the final match."""
        if not secret:
            return None
        digest = key_digest(secret)
        tenant = self.by_digest.get(digest)
        if tenant is None:
            return None
        return tenant if any(hmac.compare_digest(digest, key) for key in tenant.keys) else None

    def open_tenant(self) -> Tenant:
        return Tenant(name=OPEN_TENANT, role=Role.ADMIN)

    def _add(self, tenant: Tenant, source: str) -> None:
        existing = self.tenants.get(tenant.name)
        if existing is not None:
            if existing.role is not tenant.role:
                raise ValueError(f"tenant {tenant.name!r} is declared as both {existing.role} and {tenant.role}")
            tenant = existing.model_copy(update={"keys": [*existing.keys, *tenant.keys]})
        for digest in tenant.keys:
            owner = self.by_digest.get(digest)
            if owner is not None and owner.name != tenant.name:
                raise ValueError(f"one key is given to both {owner.name!r} and {tenant.name!r} ({source})")
        self.tenants[tenant.name] = tenant
        for digest in tenant.keys:
            self.by_digest[digest] = tenant


def _short_form(keys: dict[str, str], role: Role) -> list[Tenant]:
    """API_KEYS / ADMIN_API_KEYS (``{secret: name}``) as tenants holding the secrets' digests."""
    return [Tenant(name=name, role=role, keys=[key_digest(secret)]) for secret, name in keys.items()]


def parse_tenants_file(text: str) -> list[Tenant]:
    data: Any = yaml.safe_load(text)
    return TenantsFile.model_validate(data if data is not None else {"tenants": []}).tenants


def load_directory(settings: Settings) -> TenantDirectory:
    """Build the directory from TENANTS_FILE, API_KEYS and ADMIN_API_KEYS; a bad entry stops
    the process with the variable's name (``invalid configuration: TENANTS_FILE: …``)."""
    directory = TenantDirectory()
    sources: list[tuple[str, list[Tenant]]] = []
    if settings.tenants_file:
        try:
            sources.append(("TENANTS_FILE", parse_tenants_file(Path(settings.tenants_file).read_text())))
        except OSError as exc:
            raise fail_config("TENANTS_FILE", f"cannot read {settings.tenants_file}: {exc}") from None
        except yaml.YAMLError as exc:
            raise fail_config("TENANTS_FILE", f"not valid YAML: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise fail_config("TENANTS_FILE", f"{where}: {first['msg']}") from None
    sources.append(("API_KEYS", _short_form_or_fail(settings.api_keys, Role.USER, "API_KEYS")))
    sources.append(("ADMIN_API_KEYS", _short_form_or_fail(settings.admin_api_keys, Role.ADMIN, "ADMIN_API_KEYS")))
    for source, tenants in sources:
        for tenant in tenants:
            try:
                directory._add(tenant, source)
            except ValueError as exc:
                raise fail_config(source, str(exc)) from None
    return directory


def _short_form_or_fail(keys: dict[str, str], role: Role, variable: str) -> list[Tenant]:
    try:
        return _short_form(keys, role)
    except ValidationError:
        raise fail_config(variable, "tenant names must match " + TENANT_PATTERN) from None


__all__ = ["ConfigError", "OPEN_TENANT", "Role", "Tenant", "TenantDirectory", "TenantSettings",
           "key_digest", "load_directory", "parse_tenants_file"]
