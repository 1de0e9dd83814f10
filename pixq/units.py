"""Parse human units from configuration: durations (``30s``, ``500ms``, ``2m``) and sizes (``50MiB``)."""

import math
import re
import time
from datetime import timezone
from email.utils import parsedate_to_datetime

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d)?\s*$")
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE = re.compile(r"^\s*([0-9]{1,18})\s*([a-zA-Z]*)\s*$")
"""ASCII digits only (``\\d`` also matches '٣'), and few enough that int() never hits its
4300-digit limit nor a duration float becomes inf."""


def parse_duration(text: str | float | int) -> float:
    """Return seconds; a bare number means seconds. Raises ValueError on anything else."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"duration must be a finite number of seconds, not {text!r}")
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 2m, 1h)")
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[unit or "s"]


def parse_duration_list(text: str | list) -> list[float]:
    """Parse ``0s,2s,8s`` into seconds; at least one entry."""
    parts = text if isinstance(text, list) else [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("needs at least one duration, e.g. 0s,2s,8s,30s")
    return [parse_duration(part) for part in parts]


def parse_size(text: str | int) -> int:
    """Return bytes from ``52428800``, ``50MiB`` or ``50MB``."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("size must not be negative")
        return text
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 52428800, 50MiB, 20MB)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """An HTTP ``Retry-After`` as seconds from ``now`` (epoch seconds, default the clock):
    delta-seconds or an HTTP date (RFC 9110 10.2.3); None when absent or unreadable. Read by
    the webhook deliverer (from receivers) and pixq.client (from the API)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))
