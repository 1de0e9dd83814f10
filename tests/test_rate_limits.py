"""Rate limits per tenant and per client IP (api.ratelimit): the real API against real
nats-server and redis-server. Windows are a minute or an hour, so nothing depends on timing."""

import asyncio
import json
import re
import signal
import subprocess
from ipaddress import ip_network
from pathlib import Path

import pytest

from api.ratelimit import client_ip, ip_key, policies
from pixq.settings import ConfigError, load_settings, parse_rate_limit
from pixq.tenants import key_digest, load_directory
from tests.conftest import running_api
from tests.stack import BIN, stack_env

ALPHA, BETA, GAMMA = "alpha-secret", "beta-secret", "gamma-secret"
TOKEN = "/api/v1/events/token"
"""An authenticated route that needs neither Redis nor NATS: it answers while Redis is frozen."""
NO_JOB = "/api/v1/jobs/00000000-0000-4000-8000-000000000000"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def tenants_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(json.dumps({"tenants": [  # JSON is YAML
        {"name": "alpha", "keys": [key_digest(ALPHA)], "settings": {"rate_limit": "3/minute"}},
        {"name": "beta", "keys": [key_digest(BETA)]},
        {"name": "gamma", "keys": [key_digest(GAMMA)], "settings": {"rate_limit": "off"}},
    ]}))
    return path


def parse_items(header: str | None) -> dict[str, dict[str, int]]:
    """A RateLimit or RateLimit-Policy field value: {policy name: {parameter: integer}}."""
    items: dict[str, dict[str, int]] = {}
    for item in filter(None, (part.strip() for part in (header or "").split(","))):
        name, *params = item.split(";")
        assert re.fullmatch(r'"[a-z0-9-]+"', name), item  # an sf-string
        items[name.strip('"')] = {key: int(value) for key, _, value in (param.partition("=") for param in params)}
    return items


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{name}{{{re.escape(wanted)}}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def assert_rate_limited(response, kind: str) -> int:
    """The 429 envelope with an integer Retry-After equal to the refused policy's ``t``."""
    assert response.status == 429, await response.text()
    assert (await response.json())["error"]["code"] == "RATE_LIMITED"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, retry_after
    assert parse_items(response.headers["RateLimit"])[kind] == {"r": 0, "t": int(retry_after)}
    return int(retry_after)


# --- Against the running API -----------------------------------------------------------------


async def test_each_tenant_spends_its_own_budget(make_settings, tenants_file: Path):
    """alpha's own 3/minute (TENANTS_FILE), beta's RATE_LIMIT default of 2/minute, gamma's off;
    exhausting one tenant's budget leaves the others' whole."""
    settings = make_settings("local", tenants_file=tenants_file, rate_limit="2/minute",
                             rate_limit_per_ip="off", rate_limit_timeout=5.0)
    async with running_api(settings) as api:
        before = await (await api.get("/metrics")).text()
        for left in (2, 1, 0):
            response = await api.post(TOKEN, headers=bearer(ALPHA))
            assert response.status == 200, await response.text()
            assert parse_items(response.headers["RateLimit-Policy"]) == {"tenant": {"q": 3, "w": 60}}
            limit = parse_items(response.headers["RateLimit"])["tenant"]
            assert limit["r"] == left and 0 <= limit["t"] <= 60
        await assert_rate_limited(await api.post(TOKEN, headers=bearer(ALPHA)), "tenant")
        await assert_rate_limited(await api.get(NO_JOB, headers=bearer(ALPHA)), "tenant")

        for left in (1, 0):
            response = await api.post(TOKEN, headers=bearer(BETA))
            assert response.status == 200 and parse_items(response.headers["RateLimit"])["tenant"]["r"] == left
        refused = await api.post(TOKEN, headers=bearer(BETA))
        await assert_rate_limited(refused, "tenant")
        assert parse_items(refused.headers["RateLimit-Policy"]) == {"tenant": {"q": 2, "w": 60}}

        for _ in range(5):  # "off": no limit, and no headers about one
            response = await api.post(TOKEN, headers=bearer(GAMMA))
            assert response.status == 200
            assert "RateLimit" not in response.headers and "RateLimit-Policy" not in response.headers
        after = await (await api.get("/metrics")).text()
    for tenant, refusals in (("alpha", 2), ("beta", 1), ("gamma", 0)):
        counted = metric(after, "pixq_api_rate_limited_total", kind="tenant", tenant=tenant)
        assert counted - metric(before, "pixq_api_rate_limited_total", kind="tenant", tenant=tenant) == refusals


async def test_the_ip_limit_spans_keys_and_runs_before_authentication(make_settings, tenants_file: Path):
    settings = make_settings("local", tenants_file=tenants_file, rate_limit="off", rate_limit_per_ip="4/minute",
                             rate_limit_timeout=5.0)
    async with running_api(settings) as api:
        assert (await api.post(TOKEN, headers=bearer(ALPHA))).status == 200
        assert (await api.post(TOKEN, headers=bearer(BETA))).status == 200
        assert (await api.get(NO_JOB, headers=bearer(BETA))).status == 404
        unknown = await api.post(TOKEN, headers=bearer("guessed-key"))  # a 401 counts, and says so
        assert unknown.status == 401
        assert parse_items(unknown.headers["RateLimit-Policy"]) == {"ip": {"q": 4, "w": 60}}
        assert parse_items(unknown.headers["RateLimit"])["ip"]["r"] == 0

        # Over the limit, whatever the key, even none: refused before the key is looked at.
        for headers in (bearer(ALPHA), bearer(GAMMA), bearer("guessed-key"), {}):
            await assert_rate_limited(await api.post(TOKEN, headers=headers), "ip")
        await assert_rate_limited(await api.get("/files/inputs/alpha/x"), "ip")
        await assert_rate_limited(await api.post("/uploads/not-a-token"), "ip")

        # Probes, scrapes and unknown paths outside the API: exempt ones answer, unlimited, bare.
        for path in ("/health/live", "/metrics"):
            response = await api.get(path)
            assert response.status == 200 and "RateLimit" not in response.headers, path


async def test_headers_on_success_errors_and_refusals(make_settings, tenants_file: Path):
    """Both kinds on every /api/v1 response; several limits per kind, named by window; a refused
    request spends nothing (the hour's budget is untouched by the minute's refusals)."""
    settings = make_settings("local", tenants_file=tenants_file, rate_limit="2/minute;5/hour",
                             rate_limit_per_ip="20/minute", rate_limit_timeout=5.0)
    async with running_api(settings) as api:
        policy = {"ip": {"q": 20, "w": 60}, "tenant-60s": {"q": 2, "w": 60}, "tenant-3600s": {"q": 5, "w": 3600}}
        ok = await api.post(TOKEN, headers=bearer(BETA))
        missing = await api.get(NO_JOB, headers=bearer(BETA))
        refused = [await api.post(TOKEN, headers=bearer(BETA)) for _ in range(2)]
        assert (ok.status, missing.status) == (200, 404)
        for response in (ok, missing, *refused):
            assert parse_items(response.headers["RateLimit-Policy"]) == policy
        assert {name: item["r"] for name, item in parse_items(ok.headers["RateLimit"]).items()} == \
            {"ip": 19, "tenant-60s": 1, "tenant-3600s": 4}
        assert {name: item["r"] for name, item in parse_items(missing.headers["RateLimit"]).items()} == \
            {"ip": 18, "tenant-60s": 0, "tenant-3600s": 3}
        for response in refused:
            await assert_rate_limited(response, "tenant-60s")
            assert parse_items(response.headers["RateLimit"])["tenant-3600s"]["r"] == 3
        assert [parse_items(r.headers["RateLimit"])["ip"]["r"] for r in refused] == [17, 16]


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(make_settings, tenants_file: Path):
    base = dict(tenants_file=tenants_file, rate_limit="off", rate_limit_per_ip="2/minute", rate_limit_timeout=5.0)

    def via(*hops: str) -> dict[str, str]:
        return {"X-Forwarded-For": ", ".join(hops), **bearer(BETA)}

    async with running_api(make_settings("local", trusted_proxies="127.0.0.1/32", **base)) as api:
        # The client is the right-most untrusted hop; what it wrote left of that is ignored.
        assert (await api.post(TOKEN, headers=via("198.51.100.1", "203.0.113.7"))).status == 200
        assert (await api.post(TOKEN, headers=via("198.51.100.2", "203.0.113.7"))).status == 200
        await assert_rate_limited(await api.post(TOKEN, headers=via("198.51.100.3", "203.0.113.7")), "ip")
        assert (await api.post(TOKEN, headers=via("203.0.113.8"))).status == 200  # another client

    async with running_api(make_settings("local", **base)) as api:  # no trusted proxy: the peer counts
        assert (await api.post(TOKEN, headers=via("203.0.113.20"))).status == 200
        assert (await api.post(TOKEN, headers=via("203.0.113.21"))).status == 200
        await assert_rate_limited(await api.post(TOKEN, headers=via("203.0.113.22")), "ip")


async def test_two_replicas_share_one_budget(make_settings, tenants_file: Path):
    settings = make_settings("local", tenants_file=tenants_file, rate_limit="off", rate_limit_timeout=5.0)
    async with running_api(settings) as first, running_api(settings) as second:
        for replica in (first, second, first):
            assert (await replica.post(TOKEN, headers=bearer(ALPHA))).status == 200
        await assert_rate_limited(await second.post(TOKEN, headers=bearer(ALPHA)), "tenant")
        await assert_rate_limited(await first.post(TOKEN, headers=bearer(ALPHA)), "tenant")


async def test_a_frozen_redis_fails_open_and_limits_resume(make_settings, redis_proc, tenants_file: Path):
    """SIGSTOP redis-server: requests still answer (not 429, not 5xx), each well within the
    Redis client's own 5 s socket timeout; after SIGCONT the tenant's spent budget is enforced again."""
    settings = make_settings("local", tenants_file=tenants_file, rate_limit="2/minute",
                             rate_limit_per_ip="100/minute", rate_limit_timeout=0.2)
    async with running_api(settings) as api:
        for _ in range(2):
            assert (await api.post(TOKEN, headers=bearer(BETA))).status == 200
        await assert_rate_limited(await api.post(TOKEN, headers=bearer(BETA)), "tenant")
        before = await (await api.get("/metrics")).text()

        redis_proc.process.send_signal(signal.SIGSTOP)
        try:
            for _ in range(5):
                response = await asyncio.wait_for(api.post(TOKEN, headers=bearer(BETA)), timeout=2.5)
                assert response.status == 200, await response.text()
                # The policy still holds; what is left is unknown, so no RateLimit item claims it.
                assert set(parse_items(response.headers["RateLimit-Policy"])) == {"ip", "tenant"}
                assert "RateLimit" not in response.headers
            during = await (await api.get("/metrics")).text()
        finally:
            redis_proc.process.send_signal(signal.SIGCONT)
        unchecked = sum(metric(during, "pixq_api_rate_limit_unchecked_total", kind=kind, reason=reason)
                        - metric(before, "pixq_api_rate_limit_unchecked_total", kind=kind, reason=reason)
                        for kind in ("ip", "tenant") for reason in ("timeout", "error", "cool_off"))
        assert unchecked == 10  # both kinds of all five requests

        # Limits resume once Redis answers again and the cool-off is over.
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            response = await api.post(TOKEN, headers=bearer(BETA))
            if response.status == 429:
                break
            assert response.status == 200
            assert asyncio.get_running_loop().time() < deadline, "limits did not resume"
            await asyncio.sleep(0.1)
        await assert_rate_limited(response, "tenant")


# --- Configuration -----------------------------------------------------------------------------


def test_a_bad_rate_limit_stops_the_api_naming_the_variable(tmp_path: Path):
    env = stack_env(1, 1, tmp_path, RATE_LIMIT="100 a second")
    done = subprocess.run([str(BIN / "pixq-api")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid configuration: RATE_LIMIT:" in done.stderr, done.stderr


@pytest.mark.parametrize(("variable", "value"), [
    ("RATE_LIMIT", "0/second"), ("RATE_LIMIT", "1/second;2/1second"), ("RATE_LIMIT_PER_IP", "lots"),
    ("TRUSTED_PROXIES", "10.0.0.5/8"), ("TRUSTED_PROXIES", "proxy.internal"), ("RATE_LIMIT_TIMEOUT", "0s"),
])
def test_bad_limit_settings_name_their_variable(monkeypatch, capsys, variable: str, value: str):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError):
        load_settings()
    assert f"invalid configuration: {variable}:" in capsys.readouterr().err


def test_a_bad_tenant_rate_limit_names_tenants_file(tmp_path: Path, make_settings, capsys):
    path = tmp_path / "tenants.yaml"
    path.write_text(json.dumps({"tenants": [{"name": "a", "keys": [key_digest("k")],
                                             "settings": {"rate_limit": "100/fortnight"}}]}))
    with pytest.raises(ConfigError):
        load_directory(make_settings("local", tenants_file=path))
    err = capsys.readouterr().err
    assert "invalid configuration: TENANTS_FILE:" in err and "rate_limit" in err


# --- Pure logic --------------------------------------------------------------------------------


def test_rate_limit_notation():
    assert parse_rate_limit("off") == parse_rate_limit(" ") == []
    assert [(i.amount, i.get_expiry()) for i in parse_rate_limit("5000/hour; 10 per second")] == [(10, 1), (5000, 3600)]
    assert [p.header_item() for p in policies("tenant", "100/second")] == ['"tenant";q=100;w=1']
    assert [p.header_item() for p in policies("ip", "10/second;600/5 minutes")] == \
        ['"ip-1s";q=10;w=1', '"ip-300s";q=600;w=300']


def test_client_ip():
    proxies = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]
    assert client_ip("192.0.2.1", ["203.0.113.9"], proxies) == "192.0.2.1"  # untrusted peer: XFF ignored
    assert client_ip("10.0.0.2", [], proxies) == "10.0.0.2"
    assert client_ip("10.0.0.2", ["203.0.113.9"], proxies) == "203.0.113.9"
    assert client_ip("10.0.0.2", ["198.51.100.1, 203.0.113.9, 10.0.0.7"], proxies) == "203.0.113.9"
    assert client_ip("10.0.0.2", ["198.51.100.1", "203.0.113.9"], proxies) == "203.0.113.9"  # two fields
    assert client_ip("10.0.0.2", ["10.0.0.9, 10.0.0.7"], proxies) == "10.0.0.9"  # all trusted: left-most
    assert client_ip("10.0.0.2", ["203.0.113.9, garbage"], proxies) == "10.0.0.2"  # ends at the proxy
    assert client_ip("fd00::1", ["[2001:db8::5]:4711"], proxies) == "2001:db8::5"
    assert client_ip("10.0.0.2", ["203.0.113.9:4711"], proxies) == "203.0.113.9"
    assert client_ip("::ffff:192.0.2.1", [], proxies) == "192.0.2.1"
    assert client_ip(None, ["203.0.113.9"], proxies) == "unknown"
    assert ip_key("2001:db8::5") == ip_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert ip_key("203.0.113.9") == "203.0.113.9"
