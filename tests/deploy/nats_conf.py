"""Just enough of NATS's config format to read pixq's auth.conf: the users, their password
references and their publish/subscribe allow lists. (The real parser is nats-server
itself: test_nats_auth.py runs it on the rendered files.)"""

import re

_COMMENT = re.compile(r"#[^\n]*")
_QUOTED = re.compile(r'"([^"]*)"')
_USER = re.compile(r"\buser:\s*([A-Za-z0-9_-]+)")


def users(auth_conf: str) -> dict[str, dict]:
    """{user: {"password": str, "publish": [subjects], "subscribe": [subjects]}}."""
    text = _COMMENT.sub("", auth_conf)
    starts = [(m.start(), m.group(1)) for m in _USER.finditer(text)]
    out = {}
    for i, (start, name) in enumerate(starts):
        block = text[start:starts[i + 1][0] if i + 1 < len(starts) else len(text)]
        password = re.search(r"\bpassword:\s*(\S+)", block)
        publish, _, subscribe = block.partition("subscribe")
        out[name] = {
            "password": password.group(1) if password else None,
            "publish": _QUOTED.findall(publish),
            "subscribe": _QUOTED.findall(subscribe),
        }
    return out


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a final ``>`` one or more."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def allowed(subjects: list[str], subject: str) -> bool:
    return any(subject_matches(pattern, subject) for pattern in subjects)
