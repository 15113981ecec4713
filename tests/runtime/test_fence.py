"""The outbound fence's plain logic (runtime/fence.py), no network: which addresses are public, how odd IPv4
spellings read, allowed prefixes matched on the parsed URL, every DNS answer checked, the loopback setting, and
the settings that feed it. The fetching itself is tested against real local servers in tests/test_sending.py."""
from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from runtime.config import load_config
from runtime.errors import ConfigError, OutboundError, OutboundRefused
from runtime.fence import Fence, address_problem, erxes_prefixes, literal_ip, parse_prefix


@pytest.mark.parametrize("address, problem", [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("0.0.0.0", "this network"),
    ("::", "unspecified"), ("100.64.0.1", "shared"), ("198.18.0.1", "benchmarking"),
    ("192.0.2.1", "documentation"), ("198.51.100.7", "documentation"), ("203.0.113.9", "documentation"),
    ("2001:db8::1", "documentation"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("192.0.0.8", "IETF"),
    ("::ffff:127.0.0.1", "IPv4-mapped"), ("::ffff:8.8.8.8", "IPv4-mapped"), ("::127.0.0.1", "IPv4-compatible"),
    ("64:ff9b::7f00:1", "loopback, in NAT64 form"), ("64:ff9b::a00:1", "private, in NAT64 form"),
    ("2002:7f00:1::", "loopback, in 6to4 form"), ("2002:a9fe:a9fe::", "link-local, in 6to4 form"),
    ("2001::1", "Teredo"), ("fec0::1", "site-local"), ("100::1", "discard"), ("1::1", "reserved"),
])
def test_addresses_that_are_not_public_are_named(address, problem):
    assert problem in (address_problem(ipaddress.ip_address(address)) or "")


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111",
                                     "64:ff9b::808:808", "2002:808:808::1", "2a00:1450:4001:80b::200e"])
def test_public_addresses_pass(address):
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("host, address", [
    ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"),
    ("0x7F000001", "127.0.0.1"), ("0", "0.0.0.0"), ("169.254.43518", "169.254.169.254"), ("[::1]", "::1"),
    ("::ffff:7f00:1", "::ffff:127.0.0.1"), ("10.0.0.1", "10.0.0.1"),
])
def test_odd_ipv4_spellings_read_as_getaddrinfo_reads_them(host, address):
    assert literal_ip(host) == ipaddress.ip_address(address)
    if ":" not in host:  # the system's resolver agrees, without any DNS (numeric forms only)
        found = socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        assert {info[4][0] for info in found} == {address}


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.1", "1.16777216", "08.1", "0x", "1e100.net"])
def test_names_are_not_addresses(host):
    assert literal_ip(host) is None


class Resolver:
    """DNS as a test sets it: host -> addresses; records every question."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, (a, port)) for a in self.answers[host]]


def fence(answers: dict[str, list[str]], **kwargs: Any) -> Fence:
    return Fence(resolve=Resolver(answers), **kwargs)


ERXES = "https://erxes.example.com/gateway/read-file"


@pytest.mark.parametrize("url", [
    "https://erxes.example.com/gateway/read-file?key=a.png",
    "https://ERXES.example.com:443/gateway/read-file?key=a.png&name=x",
    "https://erxes.example.com/gateway/read-file/sub?key=a.png",
])
def test_an_allowed_prefix_is_fetched_whatever_its_address(url):
    inside = fence({"erxes.example.com": ["10.0.0.5"]}, allow=[ERXES])  # split-horizon DNS: a private address
    target, addresses = inside.check(url)
    assert target.host == "erxes.example.com" and addresses[0][1][0] == "10.0.0.5"


@pytest.mark.parametrize("url", [
    "https://erxes.example.com.evil.com/gateway/read-file?key=a",  # a string startswith would pass these
    "https://erxes.example.com/gateway/read-file-other?key=a",
    "https://erxes.example.com/gateway/read-filex",
    "http://erxes.example.com/gateway/read-file?key=a",  # another scheme
    "https://erxes.example.com:8443/gateway/read-file?key=a",  # another port
    "https://erxes.example.com/gateway/read-file/../../admin",  # dot segments leave the prefix
    "https://erxes.example.com/gateway/read-file/%2e%2e/%2E%2E/admin",
    "https://erxes.example.com/gateway/read-file/..\\..\\admin",
    "https://erxes.example.com/other/gateway/read-file",
])
def test_prefixes_are_matched_on_the_parsed_url(url):
    inside = fence({"erxes.example.com": ["10.0.0.5"], "erxes.example.com.evil.com": ["10.0.0.6"]}, allow=[ERXES])
    with pytest.raises(OutboundRefused, match="non-public address .private."):
        inside.check(url)


def test_credentials_in_a_url_are_refused_and_the_query_never_shown():
    inside = fence({"evil": ["10.0.0.6"], "erxes.example.com": ["10.0.0.5"]}, allow=[ERXES])
    with pytest.raises(OutboundRefused, match="carries credentials") as caught:
        inside.check("https://erxes.example.com@evil/gateway/read-file?key=signed-secret")
    with pytest.raises(OutboundRefused) as private:
        inside.check("https://evil/files?key=signed-secret")
    for refusal in (caught, private):
        assert "signed-secret" not in str(refusal.value) and "https://evil/" in str(refusal.value)


def test_every_dns_answer_is_checked_and_literals_need_no_dns():
    resolver = Resolver({"mixed.example": ["93.184.216.34", "127.0.0.1"], "public.example": ["93.184.216.34"]})
    outside = Fence(resolve=resolver)
    with pytest.raises(OutboundRefused, match=r"mixed\.example resolves to a non-public address \(loopback\)"):
        outside.check("https://mixed.example/a")
    _target, addresses = outside.check("https://public.example/a")
    assert addresses == [(socket.AF_INET, ("93.184.216.34", 443))]  # what the connection will use: checked
    for url in ("http://2130706433/", "http://0x7f.1/", "http://[::ffff:127.0.0.1]/", "http://169.254.169.254/"):
        with pytest.raises(OutboundRefused, match="is a non-public address"):
            outside.check(url)
    assert resolver.asked == ["mixed.example", "public.example"]
    with pytest.raises(OutboundError, match="does not resolve") as unknown:
        outside.check("https://nowhere.example/a")
    assert not isinstance(unknown.value, OutboundRefused)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", "ftp://x.example/a", "gopher://x/", "",
                                 "http:///nohost", "http://a b.example/"])
def test_only_http_and_https_urls(url):
    with pytest.raises(OutboundRefused, match="http or https|spaces"):
        fence({}).check(url)


def test_loopback_only_with_its_setting_and_never_the_private_ranges():
    answers = {"localhost": ["127.0.0.1", "::1"], "intra.example": ["10.0.0.1"], "pub.example": ["93.184.216.34"]}
    strict, tests = fence(answers), fence(answers, allow_loopback=True)
    with pytest.raises(OutboundRefused, match="loopback: only with OUTBOUND_ALLOW_LOOPBACK_HTTP"):
        strict.check("http://localhost:8080/token")
    tests.check("http://localhost:8080/token")
    tests.check("http://127.0.0.1:8080/token", https_only=True)  # a token endpoint in the tests
    with pytest.raises(OutboundRefused, match="private"):
        tests.check("http://intra.example/")
    with pytest.raises(OutboundRefused, match=r"must be https:// \(http:// only to a loopback address"):
        tests.check("http://pub.example/token", https_only=True)
    with pytest.raises(OutboundRefused, match="must be https://"):
        strict.check("http://127.0.0.1:8080/token", https_only=True)
    strict.check("https://pub.example/token", https_only=True)


def test_the_subdomain_placeholder_is_the_requests_organisation():
    saas = fence({"acme.app.erxes.io": ["10.0.0.5"], "other.app.erxes.io": ["10.0.0.6"]},
                 allow=["https://<subdomain>.app.erxes.io/gateway/read-file"])
    saas.check("https://acme.app.erxes.io/gateway/read-file?key=k", subdomain="acme")
    for subdomain in ("other", None, "a.b", ""):
        with pytest.raises(OutboundRefused):
            saas.check("https://acme.app.erxes.io/gateway/read-file?key=k", subdomain=subdomain)


def test_prefixes_parse_strictly():
    assert str(parse_prefix("HTTPS://Erxes.Example.com:443/gateway/read-file")) == ERXES
    assert str(parse_prefix("http://127.0.0.1:8080/")) == "http://127.0.0.1:8080"
    for bad in ("erxes.example.com/read-file", "ftp://x/", "https://u:p@x/", "https://x/a?key=1", "https://x/#f",
                "https://x:99999/", "https://ex ample.com/", "https://"):
        with pytest.raises(ValueError):
            parse_prefix(bad)


def test_the_erxes_file_route_comes_from_erxes_settings(tmp_path):
    assert erxes_prefixes("https://erxes.example.com/", "") == [
        "https://erxes.example.com/gateway/read-file", "https://erxes.example.com/gateway/pl:core/read-file"]
    config = load_config(environ={"DOMAIN": "https://erxes.example.com", "REACT_APP_API_URL": "https://api.x.io"})
    assert config.outbound_url_allow == ("erxes",) and not config.outbound_allow_loopback_http
    assert [str(p) for p in Fence.from_config(config).allow] == [
        "https://erxes.example.com/gateway/read-file", "https://erxes.example.com/gateway/pl:core/read-file",
        "https://api.x.io/read-file"]
    cli = tmp_path / "configs.json"  # the erxes CLI's configs.json names the domain at its top
    cli.write_text('{"domain": "https://crm.example.org", "imap_runtime": {}}')
    assert [str(p) for p in Fence.from_config(load_config(cli, environ={})).allow][0] == \
        "https://crm.example.org/gateway/read-file"
    own = load_config(environ={"DOMAIN": "https://erxes.example.com",
                               "OUTBOUND_URL_ALLOW": "https://files.example.com/f/, http://127.0.0.1:9/x",
                               "OUTBOUND_ALLOW_LOOPBACK_HTTP": "true"})
    assert [str(p) for p in Fence.from_config(own).allow] == ["https://files.example.com/f/", "http://127.0.0.1:9/x"]
    assert Fence.from_config(own).allow_loopback
    assert Fence.from_config(load_config(environ={})).allow == ()  # no erxes address known: public addresses only


@pytest.mark.parametrize("env, words", [
    ({"OUTBOUND_URL_ALLOW": "erxes.example.com"}, "OUTBOUND_URL_ALLOW"),
    ({"OUTBOUND_URL_ALLOW": "https://x/?key=1"}, r"no \?query"),
    ({"OUTBOUND_ALLOW_LOOPBACK_HTTP": "perhaps"}, "true or false"),
    ({"DOMAIN": "erxes.example.com"}, "DOMAIN"),
])
def test_bad_fence_settings_stop_start_up(env, words):
    with pytest.raises(ConfigError, match=words):
        load_config(environ=env)
