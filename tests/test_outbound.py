"""The SSRF guard (pixq.outbound): blocked ranges, IP literals, and a resolver that filters what
DNS answers, so a name rebinding to a private address never gets a connection.

Pure logic with fake resolvers, plus real connections to a loopback server started here: the
fake resolver answers 127.0.0.1 for a public-looking name, and only the guard stands between
the request and that server (with the guard lifted the same request reaches it)."""

import ipaddress
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from pixq import outbound
from pixq.outbound import GuardedResolver, OutboundRefused

BLOCKED = ["127.0.0.1", "127.5.5.5", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
           "169.254.1.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
           "192.0.0.8", "198.18.0.1", "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd00:ec2::254",
           "ff02::1", "ff0e::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
           "2002:7f00:1::", "2002:a00:1::", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2001:db8::1"]
PUBLIC = ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "2001:4860:4860::8888",
          "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", BLOCKED)
def test_blocked_addresses(address):
    assert outbound.blocked_reason(ipaddress.ip_address(address)) is not None
    with pytest.raises(OutboundRefused):
        outbound.check_address("receiver.example", address, allow_private=False)
    outbound.check_address("receiver.example", address, allow_private=True)  # the flag lifts it


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert outbound.blocked_reason(ipaddress.ip_address(address)) is None
    outbound.check_address("receiver.example", address, allow_private=False)


def test_metadata_addresses_are_named():
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        assert "metadata" in outbound.blocked_reason(ipaddress.ip_address(address))


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "::ffff:127.0.0.1", "[::ffff:a9fe:a9fe]", "10.0.0.1",
                                  "169.254.169.254", "[fd00:ec2::254]"])
def test_ip_literal_hosts_are_checked_without_the_resolver(host):
    with pytest.raises(OutboundRefused):
        outbound.check_host(host, allow_private=False)
    outbound.check_host(host, allow_private=True)


def test_names_are_left_to_the_resolver():
    outbound.check_host("localhost", allow_private=False)  # refused when resolved, not here
    outbound.check_host("8.8.8.8", allow_private=False)


class FakeResolver(AbstractResolver):
    """Answers every name with fixed addresses; each call is recorded."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        self.calls.append(host)
        addresses = self.answers[min(len(self.calls), len(self.answers)) - 1]
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET, "proto": 0, "flags": 0}
                for address in addresses]

    async def close(self):
        pass


async def test_resolver_keeps_only_allowed_addresses():
    guarded = GuardedResolver(FakeResolver(["127.0.0.1", "93.184.216.34", "10.0.0.7", "2606:4700::1"]))
    answers = await guarded.resolve("mixed.example", 443)
    assert [a["host"] for a in answers] == ["93.184.216.34", "2606:4700::1"]


async def test_resolver_refuses_a_name_that_resolves_only_to_blocked_addresses():
    guarded = GuardedResolver(FakeResolver(["169.254.169.254", "::ffff:127.0.0.1"]))
    with pytest.raises(OutboundRefused) as refused:
        await guarded.resolve("metadata.example", 80)
    assert "metadata" in refused.value.reason and refused.value.host == "metadata.example"


async def test_dns_rebinding_cannot_pass():
    """Public on the first lookup, loopback on the next: every answer is checked as it is used."""
    fake = FakeResolver(["93.184.216.34"], ["127.0.0.1"])
    guarded = GuardedResolver(fake)
    assert [a["host"] for a in await guarded.resolve("rebind.example", 80)] == ["93.184.216.34"]
    with pytest.raises(OutboundRefused):
        await guarded.resolve("rebind.example", 80)
    assert fake.calls == ["rebind.example", "rebind.example"]


def test_socket_factory_checks_the_address_connected_to():
    with pytest.raises(OutboundRefused):
        outbound._guarded_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))
    with pytest.raises(OutboundRefused):
        outbound._guarded_socket((socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:10.0.0.1", 80, 0, 0)))
    outbound._guarded_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 80))).close()


@pytest.fixture
async def loopback_server():
    """A real HTTP server on 127.0.0.1 that counts the requests reaching it."""
    hits = []

    async def handler(request):
        hits.append(request.path)
        return web.Response(text="reached")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield port, hits
    await runner.cleanup()


async def test_a_name_resolving_to_loopback_gets_no_connection(loopback_server):
    port, hits = loopback_server
    async with outbound.session(False, resolver=FakeResolver(["127.0.0.1"])) as session:
        with pytest.raises(aiohttp.ClientError) as failed:
            await session.get(f"http://hooks.example.com:{port}/hook")
        assert outbound.refusal(failed.value) is not None, failed.value
    assert hits == []
    # The same request with the guard lifted reaches the server: the guard, not the fake, refused it.
    async with outbound.session(True, resolver=FakeResolver(["127.0.0.1"])) as session:
        async with session.get(f"http://hooks.example.com:{port}/hook") as response:
            assert response.status == 200
    assert hits == ["/hook"]


async def test_an_ip_literal_is_refused_by_the_socket_factory_too(loopback_server):
    """aiohttp skips the resolver for literals: the connector's socket factory still refuses."""
    port, hits = loopback_server
    async with outbound.session(False) as session:
        with pytest.raises(aiohttp.ClientError) as failed:
            await session.get(f"http://127.0.0.1:{port}/hook")
        assert outbound.refusal(failed.value) is not None, failed.value
    assert hits == []
