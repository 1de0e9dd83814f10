"""Unit tests of the source-URL rules (pixq.sources.check_source_url), the host globs of
SOURCE_ALLOWED_HOSTS and a tenant's ``source_hosts``, and the fetcher's connect-time guard
with a test resolver (a public-looking name that resolves to loopback)."""

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import ValidationError

from pixq.errors import ErrorCode, PixqError
from pixq.limits import Limits
from pixq.settings import Settings
from pixq.sources import SourceFetcher, check_source_url, origin
from pixq.tenants import Tenant, TenantDirectory, TenantSettings
from tests.fixtures import fixture
from tests.source_server import Answer, SourceServer

TENANT = Tenant(name="alpha")


def settings(**overrides) -> Settings:
    return Settings(**{"source_allowed_hosts": "images.example.com,*.cdn.example.net", **overrides})


def code_of(url: str, tenant: Tenant = TENANT, **overrides) -> ErrorCode:
    with pytest.raises(PixqError) as caught:
        check_source_url(url, settings(**overrides), tenant)
    return caught.value.code


def test_an_allowed_https_url_is_kept_without_its_fragment():
    url = "https://images.example.com/a/b.jpg?w=1&sig=x#part"
    assert check_source_url(url, settings(), TENANT) == "https://images.example.com/a/b.jpg?w=1&sig=x"
    assert check_source_url("https://IMAGES.Example.COM/x.png", settings(), TENANT).startswith(
        "https://images.example.com/")


@pytest.mark.parametrize("url", ["http://images.example.com/a.jpg", "ftp://images.example.com/a.jpg",
                                 "file:///etc/passwd", "gopher://images.example.com/", "ws://images.example.com/"])
def test_only_https_by_default(url: str):
    assert code_of(url) is ErrorCode.SOURCE_REFUSED


def test_http_with_source_allow_http():
    assert check_source_url("http://images.example.com/a.jpg", settings(source_allow_http=True), TENANT)
    assert code_of("ftp://images.example.com/a.jpg", source_allow_http=True) is ErrorCode.SOURCE_REFUSED


@pytest.mark.parametrize("url", ["https://user@images.example.com/a.jpg", "https://user:pw@images.example.com/a.jpg",
                                 "https://:pw@images.example.com/a.jpg"])
def test_credentials_in_the_url_are_refused(url: str):
    assert code_of(url) is ErrorCode.SOURCE_REFUSED


@pytest.mark.parametrize("url", ["https://images.example.com/" + "a" * 2100, "https://images.example.com/" + "é" * 700,
                                 "images.example.com/a.jpg",
                                 "/a.jpg", "https://images.example.com/a b.jpg", "https://images.example.com/\x00",
                                 "https:///a.jpg", "https://[::1/a.jpg"])
def test_malformed_urls_are_invalid_parameters(url: str):
    assert code_of(url) is ErrorCode.INVALID_PARAMETERS


@pytest.mark.parametrize("host,allowed", [
    ("images.example.com", True), ("IMAGES.EXAMPLE.COM", True), ("images.example.com.", True),
    ("a.cdn.example.net", True), ("a.b.cdn.example.net", True), ("cdn.example.net", False),
    ("images.example.com.evil.test", False), ("evilimages.example.com", False), ("example.com", False),
])
def test_host_globs(host: str, allowed: bool):
    url = f"https://{host}/a.jpg"
    if allowed:
        assert check_source_url(url, settings(), TENANT)
    else:
        assert code_of(url) is ErrorCode.SOURCE_REFUSED


def test_idn_hosts_match_their_punycode_glob():
    assert check_source_url("https://bücher.example/a.jpg", settings(source_allowed_hosts="xn--bcher-kva.example"),
                            TENANT)


def test_both_allowlists_empty_means_no_source_urls():
    with pytest.raises(PixqError, match="not enabled") as caught:
        check_source_url("https://images.example.com/a.jpg", settings(source_allowed_hosts=""), TENANT)
    assert caught.value.code is ErrorCode.SOURCE_REFUSED


def test_a_tenants_source_hosts_add_to_the_global_list():
    tenant = Tenant(name="catalogue", settings=TenantSettings(source_hosts=["Photos.Example.ORG"]))
    assert check_source_url("https://photos.example.org/a.jpg", settings(), tenant)
    assert check_source_url("https://photos.example.org/a.jpg", settings(source_allowed_hosts=""), tenant)
    assert check_source_url("https://images.example.com/a.jpg", settings(), tenant)
    assert code_of("https://photos.example.org/a.jpg") is ErrorCode.SOURCE_REFUSED  # not for other tenants


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "100.64.0.1",
                                  "0.0.0.0", "[::1]", "[::ffff:127.0.0.1]", "[fd00:ec2::254]", "[fe80::1]"])
def test_blocked_ip_literals_are_refused_at_submit_even_when_allowlisted(host: str):
    with pytest.raises(PixqError, match="refused") as caught:
        check_source_url(f"https://{host}/a.jpg", settings(source_allowed_hosts="*"), TENANT)
    assert caught.value.code is ErrorCode.SOURCE_REFUSED
    assert check_source_url(f"https://{host}/a.jpg", settings(source_allowed_hosts="*",
                                                              outbound_allow_private_networks=True), TENANT)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "0x7f.0.0.1", "017700000001"])
def test_numeric_hosts_that_getaddrinfo_reads_as_ip_addresses_are_refused(host: str):
    assert code_of(f"https://{host}/a.jpg", source_allowed_hosts="*") is ErrorCode.SOURCE_REFUSED


def test_a_public_ip_literal_passes_when_allowlisted():
    assert check_source_url("https://93.184.215.14/a.jpg", settings(source_allowed_hosts="93.184.215.*"), TENANT)


@pytest.mark.parametrize("glob", ["https://images.example.com", "images.example.com/path", "user@host",
                                  "host name", "images.example.com:443/"])
def test_globs_that_are_not_host_patterns_are_configuration_errors(glob: str):
    with pytest.raises(ValidationError):
        Settings(source_allowed_hosts=glob)
    with pytest.raises(ValidationError):
        TenantSettings(source_hosts=[glob])


def test_globs_are_normalised():
    assert Settings(source_allowed_hosts=" A.example.com , *.CDN.test ,").source_allowed_hosts == \
        "a.example.com,*.cdn.test"
    assert TenantSettings(source_hosts=["A.Example.com"]).source_hosts == ["a.example.com"]


def test_origin_shows_no_path_query_or_credentials():
    assert origin("https://u:p@images.example.com:8443/secret/path?token=t#f") == "https://images.example.com:8443"
    assert origin("https://[::1]/x?y") == "https://[::1]"


def test_error_codes_are_permanent_or_retried():
    assert PixqError(ErrorCode.SOURCE_UNAVAILABLE, "").transient
    assert not PixqError(ErrorCode.SOURCE_REFUSED, "").transient
    assert not PixqError(ErrorCode.SOURCE_REJECTED, "").transient
    assert PixqError(ErrorCode.SOURCE_REFUSED, "").http_status == 422


class LoopbackResolver(AbstractResolver):
    """Answers every name with 127.0.0.1: a name that looks public but points at loopback."""

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("allow_private", [False, True])
async def test_a_name_resolving_to_loopback_is_refused_before_connecting(allow_private: bool):
    jpeg = fixture("sharp/Landscape_2.jpg").read_bytes()
    async with SourceServer() as source:
        source.routes["/a.jpg"] = Answer(body=jpeg)
        config = settings(source_allowed_hosts="images.example.com", source_allow_http=True,
                          outbound_allow_private_networks=allow_private)
        fetcher = SourceFetcher(config, Limits.from_settings(config), TenantDirectory(), LoopbackResolver())
        url = source.url("/a.jpg", host="images.example.com")
        if allow_private:
            assert await fetcher.fetch(url, "alpha") == jpeg
            assert source.paths() == ["/a.jpg"] and source.requests[0].host.startswith("images.example.com")
        else:
            with pytest.raises(PixqError, match="loopback address") as caught:
                await fetcher.fetch(url, "alpha")
            assert caught.value.code is ErrorCode.SOURCE_REFUSED
            assert source.connections == 0
