"""Presets: named, versioned PipelineSpecs declared in PRESETS_FILE, and the bucket-ingest rules.

A preset is a pipeline an operator declares once (``avatar``, ``catalogue``) so clients name it
instead of repeating steps and variants. Several versions of one name may coexist: a job
names ``avatar`` (the default version: the one declared *last* in the file for that name) or
``avatar@2`` (exactly version 2), and the version that ran is recorded in the job, so changing
a preset never makes an old job's status lie about what produced its outputs.

Example PRESETS_FILE::

    presets:
      - name: avatar
        version: 1
        variants: [{name: small, width: 64, height: 64, fit: cover, format: webp}]
      - name: avatar
        version: 2                        # declared last: what "avatar" means now
        steps: [{op: grayscale}]
        variants: [{name: small, width: 96, height: 96, fit: cover, format: webp}]
      - name: catalogue
        version: "2026-11"
        tenants: [catalogue]              # optional allowlist; absent: every tenant
        variants: [{name: thumb, width: 320}, {name: large, width: 1600}]
    ingest:                               # bucket events (worker.ingest)
      - prefix: incoming/catalogue/
        preset: catalogue                 # or catalogue@2026-11
        tenant: catalogue                 # who owns the jobs: explicit, never guessed

The file is read once at start (API and worker); a bad file stops the process with
``invalid configuration: PRESETS_FILE: …``, as TENANTS_FILE does.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pixq.errors import ErrorCode, PixqError
from pixq.names import TENANT_PATTERN
from pixq.settings import Settings, fail_config
from pixq.spec import PipelineSpec, describe_validation_error

PRESET_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
PIXQ_WRITTEN_PREFIXES = ("outputs/", "inputs/", "uploads/")
"""Where pixq itself writes objects: an ingest prefix overlapping one of these could make a
job's own output (or an API upload) start another job, so such a prefix is refused."""


class Preset(BaseModel):
    """One version of one preset: a PipelineSpec with a name and a version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=PRESET_NAME_PATTERN)
    version: int | str
    tenants: list[str] | None = None
    """Tenants allowed to use it; None: every tenant."""
    steps: list[Any] = Field(default_factory=list)
    variants: list[Any] | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, value: int | str) -> int | str:
        if isinstance(value, bool) or not VERSION_RE.match(str(value)):
            raise ValueError("version must be an integer or a string of [A-Za-z0-9._-]")
        return value

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not re.match(TENANT_PATTERN, name):
                raise ValueError(f"tenant name {name!r} must match {TENANT_PATTERN}")
        return value

    @property
    def spec(self) -> PipelineSpec:
        """The compiled spec (validated at load, so this never fails later)."""
        data: dict[str, Any] = {"steps": self.steps}
        if self.variants is not None:
            data["variants"] = self.variants
        return PipelineSpec.model_validate(data)

    @property
    def ref(self) -> dict[str, Any]:
        """What a job records: ``{"name", "version"}``."""
        return {"name": self.name, "version": self.version}

    def allows(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


class IngestRule(BaseModel):
    """Objects created under ``prefix`` start a job of ``preset`` owned by ``tenant``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str
    preset: str
    tenant: str = Field(pattern=TENANT_PATTERN)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not prefix or prefix.startswith("/") or not prefix.endswith("/") or "//" in prefix \
                or any(part in (".", "..") for part in prefix.split("/")):
            raise ValueError(f"prefix {prefix!r} must be a relative key prefix ending with '/'")
        for own in PIXQ_WRITTEN_PREFIXES:
            if prefix.startswith(own) or own.startswith(prefix):
                raise ValueError(f"prefix {prefix!r} overlaps {own!r}, where pixq writes objects itself")
        return prefix


class PresetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    presets: list[Preset] = Field(default_factory=list)
    ingest: list[IngestRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "PresetsFile":
        seen: set[tuple[str, str]] = set()
        for index, preset in enumerate(self.presets):
            key = (preset.name, str(preset.version))
            if key in seen:
                raise ValueError(f"presets.{index}: {preset.name}@{preset.version} is declared twice")
            seen.add(key)
            try:
                preset.spec
            except ValidationError as exc:
                raise ValueError(f"presets.{index} ({preset.name}@{preset.version}): "
                                 f"{describe_validation_error(exc)}") from None
        catalogue = Catalogue(presets=list(self.presets))
        for index, rule in enumerate(self.ingest):
            try:
                preset = catalogue.resolve(rule.preset)
            except PixqError as exc:
                raise ValueError(f"ingest.{index}: {exc.message}") from None
            if not preset.allows(rule.tenant):
                raise ValueError(f"ingest.{index}: preset {rule.preset!r} is not allowed for tenant {rule.tenant!r}")
            for other in self.ingest[:index]:
                if rule.prefix.startswith(other.prefix) or other.prefix.startswith(rule.prefix):
                    raise ValueError(f"ingest.{index}: prefix {rule.prefix!r} overlaps {other.prefix!r}")
        return self


@dataclass
class Catalogue:
    """Every preset version, and the ingest rules."""

    presets: list[Preset] = field(default_factory=list)
    ingest: list[IngestRule] = field(default_factory=list)

    def resolve(self, reference: str, tenant: str | None = None) -> Preset:
        """``name`` (its last-declared version) or ``name@version``; INVALID_PARAMETERS (422)
        for an unknown preset or version, or one the tenant may not use."""
        name, sep, version = reference.partition("@")
        candidates = [p for p in self.presets if p.name == name and (tenant is None or p.allows(tenant))]
        if sep:
            candidates = [p for p in candidates if str(p.version) == version]
        if not candidates:
            known = sorted({f"{p.name}@{p.version}" for p in self.presets if tenant is None or p.allows(tenant)})
            raise PixqError(ErrorCode.INVALID_PARAMETERS,
                            f"unknown preset {reference[:100]!r}" + (f" (known: {', '.join(known)})" if known
                                                                     else " (no presets are configured)"))
        return candidates[-1]

    def rule_for(self, key: str) -> IngestRule | None:
        """The ingest rule whose prefix holds ``key`` (prefixes never overlap), or None."""
        for rule in self.ingest:
            if key.startswith(rule.prefix):
                return rule
        return None


def parse_presets_file(text: str) -> Catalogue:
    """Parse and validate; ValueError / ValidationError / YAMLError on a bad file."""
    data: Any = yaml.safe_load(text)
    parsed = PresetsFile.model_validate(data if data is not None else {})
    return Catalogue(presets=list(parsed.presets), ingest=list(parsed.ingest))


_loaded: dict[str, Catalogue] = {}
"""Catalogues by file path: each process reads its PRESETS_FILE once."""


def read_catalogue(path: Path) -> Catalogue:
    """Read, validate and remember PRESETS_FILE; ValueError with a one-line reason otherwise.

    Settings calls this while validating PRESETS_FILE, so every process that loads its
    settings (API, worker) refuses a bad file at start, before serving anything."""
    cache_key = str(path)
    if cache_key in _loaded:
        return _loaded[cache_key]
    try:
        catalogue = parse_presets_file(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"{where}: {message}" if where else message) from None
    _loaded[cache_key] = catalogue
    return catalogue


def load_presets(settings: Settings) -> Catalogue:
    """The catalogue of PRESETS_FILE (empty without one); a bad file stops the process
    (``invalid configuration: PRESETS_FILE: …``, exit 2)."""
    if settings.presets_file is None:
        return Catalogue()
    try:
        return read_catalogue(settings.presets_file)
    except ValueError as exc:
        raise fail_config("PRESETS_FILE", str(exc)) from None
