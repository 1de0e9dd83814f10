"""Host allowlists as globs (SOURCE_ALLOWED_HOSTS, a tenant's ``source_hosts``).

Kept apart from pixq.sources so pixq.settings and pixq.tenants can validate globs at start
without importing the fetcher (which imports them). A glob names a host only, never a
scheme, port, path or credentials, so an allowlist cannot be read as "any URL that
starts with ...". Matching is fnmatch-style and case-insensitive on the URL's ASCII
(IDNA/punycode) host: ``*`` also crosses dots, so ``*.example.com`` matches
``a.b.example.com`` but not ``example.com`` itself.
"""

import fnmatch
import re

_GLOB = re.compile(r"^[a-z0-9*?.\-\[\]:!]+$")
"""Characters a host glob may hold: hostname characters, IPv6 colons, and glob syntax."""


def check_glob(glob: str) -> str:
    """The glob, lower-cased; ValueError when it could be anything but a host pattern."""
    normal = glob.strip().lower()
    if not normal or not _GLOB.match(normal):
        raise ValueError(f"host glob {glob!r} must be a host name pattern such as "
                         "'images.example.com' or '*.cdn.example.com' (no scheme, port, path or '@')")
    return normal


def parse_globs(value: str | list[str] | None) -> list[str]:
    """A comma-separated string (an env var) or a list (YAML) of globs, each checked."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [check_glob(item) for item in items if item.strip()]


def host_matches(host: str, globs: list[str]) -> bool:
    """Does ``host`` (ASCII, any case; IPv6 with or without brackets) match one glob?"""
    host = host.lower().strip("[]").rstrip(".")
    return any(fnmatch.fnmatchcase(host, glob.strip("[]")) for glob in globs)
