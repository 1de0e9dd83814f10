"""Just enough of NATS's config format to read pixq's auth.conf: the users, their password
references and their publish/subscribe allow and deny lists. (The real parser is
nats-server itself: test_nats_auth.py runs it on the rendered files.)"""

import re

_COMMENT = re.compile(r"#[^\n]*")
_QUOTED = re.compile(r'"([^"]*)"')
_USER = re.compile(r"\buser:\s*([A-Za-z0-9_-]+)")
_LIST = re.compile(r"\b(allow|deny)\s*[:=]?\s*\[([^\]]*)\]")


def _lists(section: str) -> dict[str, list[str]]:
    """{"allow": [...], "deny": [...]} of a publish or subscribe section."""
    out: dict[str, list[str]] = {"allow": [], "deny": []}
    for kind, body in _LIST.findall(section):
        out[kind] += _QUOTED.findall(body)
    return out


def users(auth_conf: str) -> dict[str, dict]:
    """{user: {"password": str, "publish": [allowed], "publish_deny": [denied],
    "subscribe": [allowed], "subscribe_deny": [denied]}}."""
    text = _COMMENT.sub("", auth_conf)
    starts = [(m.start(), m.group(1)) for m in _USER.finditer(text)]
    out = {}
    for i, (start, name) in enumerate(starts):
        block = text[start:starts[i + 1][0] if i + 1 < len(starts) else len(text)]
        password = re.search(r"\bpassword:\s*(\S+)", block)
        publish, _, subscribe = block.partition("subscribe")
        pub, sub = _lists(publish), _lists(subscribe)
        out[name] = {
            "password": password.group(1) if password else None,
            "publish": pub["allow"], "publish_deny": pub["deny"],
            "subscribe": sub["allow"], "subscribe_deny": sub["deny"],
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


def allowed(subjects: list[str], subject: str, deny: list[str] = ()) -> bool:
    """Whether ``subject`` may be published: an allow pattern matches and no deny pattern does
    (in NATS, deny wins over allow)."""
    return (any(subject_matches(pattern, subject) for pattern in subjects)
            and not any(subject_matches(pattern, subject) for pattern in deny))


def may_publish(spec: dict, subject: str) -> bool:
    """``allowed`` for one user of ``users``: its publish allow list minus its deny list."""
    return allowed(spec["publish"], subject, spec.get("publish_deny", ()))
