"""The rendered Redis, run by a real redis-server on loopback: the dev overlay's redis.conf
and command line (requirepass from its Secret, expanded as the kubelet expands $(VAR))
refuse a client without the password, accept the API's REDIS_URL, and the readiness probe
tells the two apart."""

import subprocess

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from deploy_support import container, expand, objects, one, pod_env, which
from servers import rewrite, running

from tests.servers import free_port


@pytest.fixture
def redis_dev(tmp_path):
    objs = objects("dev")
    redis_container = container(objs, "StatefulSet", "pixq-redis", "redis")
    server_env = pod_env(objs, redis_container)
    port = free_port()
    conf = one(objs, "ConfigMap", "pixq-redis-config")["data"]["redis.conf"]
    (tmp_path / "redis.conf").write_text(rewrite(conf, {"bind 0.0.0.0": "bind 127.0.0.1",
                                                        "port 6379": f"port {port}",
                                                        "dir /data": f"dir {tmp_path}"}))
    command = redis_container["command"]
    assert command == ["redis-server", "/etc/redis/redis.conf"], command
    args = [expand(a, server_env) for a in redis_container["args"]]
    url = pod_env(objs, container(objs, "Deployment", "pixq-api"))["REDIS_URL"]
    url = rewrite(url, {"@pixq-redis:6379/": f"@127.0.0.1:{port}/"})
    with running([which("redis-server"), str(tmp_path / "redis.conf"), *args], port, tmp_path / "redis.log"):
        yield port, url, redis_container, server_env


async def test_redis_refuses_clients_without_the_password(redis_dev):
    port, url, _, _ = redis_dev
    no_retry = Retry(NoBackoff(), 0)  # a refusal is final; redis-py would retry it for seconds
    anonymous = aioredis.Redis(host="127.0.0.1", port=port, retry=no_retry)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await anonymous.ping()
    finally:
        await anonymous.aclose()
    wrong = aioredis.Redis(host="127.0.0.1", port=port, password="not-the-password", retry=no_retry)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await wrong.ping()
    finally:
        await wrong.aclose()
    client = aioredis.from_url(url)  # the API's REDIS_URL, as composed in its pod
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_readiness_probe_needs_the_password(redis_dev):
    port, _, redis_container, server_env = redis_dev
    probe = redis_container["readinessProbe"]["exec"]["command"]
    probe = [part.replace("redis-cli", f"{which('redis-cli')} -p {port}") for part in probe]
    env = {"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": server_env["REDISCLI_AUTH"]}
    assert subprocess.run(probe, env=env, timeout=10).returncode == 0
    assert subprocess.run(probe, env={"PATH": "/usr/bin:/bin"}, timeout=10).returncode != 0
