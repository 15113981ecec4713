"""Every door checked, over real HTTP (the production server of actors/web.py on a loopback port): who may call
``POST /rpc``, request size limits answered clearly on every route, and no path from a request to the file system.

Storage and the supervisor are the fakes of tests/web/test_attachments.py (the seams the attachment route reads
through); everything between the socket and the handlers is the real code.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from actors.web import WebActor
from runtime.config import PRIVATE_NETWORKS, Config, load_config
from runtime.errors import ConfigError
from tests.secretscan import active, caught, register_secret
from tests.web.test_attachments import DOC, RAW, FakeMailbox, FakeStorage, FakeSupervisor
from kinds.imap.web import IMAP_PATTERNS, imap_routes
from web.app import WebDeps, make_app
from web.rpc import RpcAccess

REPO = Path(__file__).resolve().parents[2]
USER = {"user": "eyJfaWQiOiAidTEifQ=="}  # base64 of {"_id": "u1"}: the erxes gateway's logged-in user
TOKEN = "tok-" + os.urandom(12).hex()
LIMIT = 64 * 1024  # max_request_bytes in these tests
MAIL_LIMIT = 32 * 1024  # max_mail_bytes


def config(**overrides: Any) -> Config:
    return load_config(REPO / "configs.json", environ={}).with_overrides(
        max_request_bytes=LIMIT, max_mail_bytes=MAIL_LIMIT, **overrides)


class Storage(FakeStorage):
    def get_integration(self, inbox_id: str) -> None:  # /receive's look-up: no integration is known
        return None


class Server:
    """The app with an ``echo`` procedure, served by the production WebActor; records what its handlers saw."""

    def __init__(self, cfg: Config) -> None:
        self.calls: list[Any] = []
        rpc = {"echo": ("imap:echo", self.echo)}
        deps = WebDeps(ready=lambda: True, rpc=rpc, storage=Storage(DOC), extra={"imap_push": self},
                       supervisor=FakeSupervisor(FakeMailbox(RAW)), routes=[(IMAP_PATTERNS, imap_routes)])
        self.port = WebActor.start(make_app(cfg, deps=deps), port=0, host="127.0.0.1").proxy().port.get(timeout=10)

    def echo(self, request: dict[str, Any]) -> Any:
        self.calls.append(request.get("data"))
        return request.get("data")

    def ingest(self, inbox_id: str, raw: bytes, subdomain: str) -> dict[str, Any]:  # PushIngest's seam
        raise AssertionError("no integration is known, nothing may be ingested")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                *, chunked: bool = False) -> tuple[int, bytes]:
        """One request as sent (``path`` is not normalised), on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            payload: Any = body
            if chunked and body is not None:
                payload = iter([body[i:i + 8192] for i in range(0, len(body), 8192)])
            conn.request(method, path, body=payload, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def raw_head(self, head: bytes) -> bytes:
        """Send only a request's head (no body) and read the whole answer, up to the server's close."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as sock:
            sock.sendall(head)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


@pytest.fixture
def server() -> Server:
    return Server(config())


def rpc(srv: Server, body: bytes, headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, dict[str, Any]]:
    status, raw = srv.request("POST", "/rpc/echo", body, {"Content-Type": "application/json", **(headers or {})},
                              **kw)
    return status, json.loads(raw)


ENVELOPE = json.dumps({"subdomain": "os", "data": {"hello": "world"}}).encode()


# -- who may call POST /rpc -------------------------------------------------------------------------------------

def test_rpc_access_rules() -> None:
    default = RpcAccess()
    for allowed in ("127.0.0.1", "10.1.2.3", "172.20.0.5", "192.168.1.1", "::1", "::ffff:10.0.0.9", "fd00::1"):
        assert default.refusal(allowed, None) is None, allowed
    for refused in ("8.8.8.8", "172.32.0.1", "2001:db8::1", "::ffff:8.8.8.8", "", None, "not-an-ip"):
        assert default.refusal(refused, None) is not None, refused
    tokened = RpcAccess(["127.0.0.1/32"], TOKEN)
    assert tokened.refusal("127.0.0.1", f"Bearer {TOKEN}") is None
    assert tokened.refusal("127.0.0.1", f"bearer  {TOKEN} ") is None
    for wrong in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer "):
        reason = tokened.refusal("127.0.0.1", wrong)
        assert reason is not None and TOKEN not in reason, wrong
    assert "RPC_ALLOWED_NETWORKS" in (tokened.refusal("10.0.0.1", f"Bearer {TOKEN}") or "")


def test_rpc_from_a_network_not_allowed_is_refused_before_its_body_and_logged_once(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="web.rpc")
    srv = Server(config(rpc_allowed_networks="10.0.0.0/8, 192.168.0.0/16"))
    for _ in range(3):
        status, reply = rpc(srv, ENVELOPE)
        assert status == 403 and reply["status"] == "error" and "127.0.0.1" in reply["errorMessage"]
        assert "RPC_ALLOWED_NETWORKS" in reply["errorMessage"]
    assert srv.calls == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]  # tornado.access's line included
    assert len(warnings) == 1 and warnings[0].name == "web.rpc" and "refused" in warnings[0].getMessage()
    # refused before the body is read: a body far over the limit gets the same 403, not a 413
    status, reply = rpc(srv, b"{" + b" " * (LIMIT // 2) + b"}")
    assert status == 403 and srv.calls == []


def test_rpc_token_is_required_when_configured(caplog) -> None:
    register_secret(TOKEN)  # the suite-wide scan (tests/secretscan.py) fails if it shows up in any log
    caplog.set_level(logging.DEBUG)
    srv = Server(config(rpc_token=TOKEN))
    for headers in ({}, {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, {"X-Rpc-Token": TOKEN}):
        status, reply = rpc(srv, ENVELOPE, headers)
        assert status == 403 and "RPC_TOKEN" in reply["errorMessage"] and TOKEN not in json.dumps(reply), headers
    assert srv.calls == []
    status, reply = rpc(srv, ENVELOPE, {"Authorization": f"Bearer {TOKEN}"})
    assert (status, reply) == (200, {"status": "success", "data": {"hello": "world"}})
    assert srv.calls == [{"hello": "world"}]
    assert TOKEN not in caplog.text


def test_default_allows_loopback_without_a_token(server: Server) -> None:
    assert rpc(server, ENVELOPE) == (200, {"status": "success", "data": {"hello": "world"}})
    assert Config.__dataclass_fields__["rpc_allowed_networks"].default == PRIVATE_NETWORKS
    assert config().rpc_allowed_networks == PRIVATE_NETWORKS and config().rpc_token == ""


@pytest.mark.parametrize("setting, value, message", [
    ("RPC_ALLOWED_NETWORKS", "10.0.0.0/33", "is not a network"),
    ("RPC_ALLOWED_NETWORKS", "10.0.0.0/8,intranet", "'intranet' is not a network"),
    ("RPC_ALLOWED_NETWORKS", " , ", "at least one network"),
    ("RPC_TOKEN", "short-secret", "at least 16"),
    ("RPC_TOKEN", "a token with spaces in it", "no spaces"),
    ("MAX_REQUEST_BYTES", "12", "between 1024"),
    ("MAX_REQUEST_BYTES", "lots", "must be a number"),
])
def test_bad_door_settings_stop_start_up(setting: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=setting) as refused:
        load_config(REPO / "configs.json", environ={setting: value})
    assert message in str(refused.value)
    if setting == "RPC_TOKEN":
        assert value not in str(refused.value)


def test_door_settings_parse() -> None:
    cfg = load_config(REPO / "configs.json", environ={"RPC_ALLOWED_NETWORKS": "private, 203.0.113.7, 2001:db8::/32",
                                                      "RPC_TOKEN": TOKEN, "MAX_REQUEST_BYTES": "2048"})
    assert cfg.rpc_allowed_networks == (*PRIVATE_NETWORKS, "203.0.113.7/32", "2001:db8::/32")
    assert cfg.rpc_token == TOKEN and TOKEN not in repr(cfg) and cfg.max_request_bytes == 2048
    assert load_config(environ={"RPC_ALLOWED_NETWORKS": "any"}).rpc_allowed_networks == ("0.0.0.0/0", "::/0")
    assert cfg.with_overrides().rpc_allowed_networks == cfg.rpc_allowed_networks


def test_a_bad_token_setting_is_one_line_and_exit_2() -> None:
    secret = "tok en-" + os.urandom(8).hex()
    result = subprocess.run([sys.executable, "-m", "runtime", "--config", str(REPO / "configs.json")], cwd=REPO,
                            env={**os.environ, "RPC_TOKEN": secret}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "RPC_TOKEN" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert secret not in result.stderr + result.stdout


# -- request size limits ------------------------------------------------------------------------------------------

def test_bodies_over_the_limit_get_a_clear_answer_on_every_route(server: Server) -> None:
    over = b"{" + b" " * LIMIT + b"}"
    for chunked in (False, True):
        reason = f"over the limit of {LIMIT} bytes"
        status, reply = rpc(server, over, chunked=chunked)
        assert status == 200 and reply["status"] == "error" and reason in reply["errorMessage"], (chunked, reply)
        status, body = server.request("POST", "/graphql", over, {"Content-Type": "application/json", **USER},
                                      chunked=chunked)
        assert status == 413 and reason in json.loads(body)["errors"][0]["message"]
        status, body = server.request("POST", "/receive?integrationId=x", b"x" * (MAIL_LIMIT + 1), chunked=chunked)
        assert status == 413 and f"over the limit of {MAIL_LIMIT} bytes" in json.loads(body)["error"]
        status, body = server.request("GET", "/read-mail-attachment?messageId=a&integrationId=b&filename=c",
                                      over, USER, chunked=chunked)
        assert status == 413 and reason in json.loads(body)["error"]
    assert server.calls == []
    # at the limit everything still gets through
    status, reply = rpc(server, ENVELOPE + b" " * (LIMIT - len(ENVELOPE)))
    assert status == 200 and reply["status"] == "success" and server.calls == [{"hello": "world"}]
    assert server.request("POST", "/receive?integrationId=x", b"x" * MAIL_LIMIT)[0] == 404  # FakeStorage: unknown


def test_a_huge_or_expect_continue_body_is_refused_at_once(server: Server) -> None:
    """Over twice the limit (or with ``Expect: 100-continue``) the answer goes out before any body is sent."""
    for extra, length in (("", 10 ** 10), ("Expect: 100-continue\r\n", LIMIT + 1)):
        answer = server.raw_head(f"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
                                 f"Content-Length: {length}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer, answer[:200]
        assert f"the request body is {length} bytes".encode() in answer
    assert server.raw_head(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"ok")


# -- no path from a request to the file system ---------------------------------------------------------------------

STATIC_PARENT_FILE = "graphql.py"  # web/graphql.py: two directories above web/static/graphiql
TRAVERSALS = [
    f"../../{STATIC_PARENT_FILE}", f"..%2f..%2f{STATIC_PARENT_FILE}", f"%2e%2e/%2e%2e/{STATIC_PARENT_FILE}",
    f"%2e%2e%2f%2e%2e%2f{STATIC_PARENT_FILE}", f"..%5c..%5c{STATIC_PARENT_FILE}", f"....//....//{STATIC_PARENT_FILE}",
    "/etc/passwd", "%2fetc%2fpasswd", "../../../../../../../../etc/passwd", "%2e%2e%2f" * 12 + "etc%2fpasswd",
    "..%252f..%252fetc%252fpasswd", "graphiql-init.js%00.png", "", ".", "..", "%2e%2e",
]


def secrets_of_the_file_system() -> list[bytes]:
    """Content that a traversal would leak: this repository's source and the system's user list."""
    return [(REPO / "web" / STATIC_PARENT_FILE).read_bytes()[:200], b"root:x:0:0", b"[tool:pytest]"]


def test_graphiql_static_files_cannot_reach_outside_their_directory(server: Server) -> None:
    status, body = server.request("GET", "/graphiql-static/graphiql-init.js")
    assert status == 200 and body  # the door works
    leaks = secrets_of_the_file_system()
    for path in TRAVERSALS:
        for url in (f"/graphiql-static/{path}", f"/graphiql-static//{path}"):
            status, body = server.request("GET", url)
            assert status in (400, 403, 404, 405), (url, status, body[:100])
            assert not any(leak in body for leak in leaks), url


def test_attachment_names_never_reach_the_file_system(server: Server) -> None:
    base = f"/read-mail-attachment?integrationId=inbox-1&messageId={DOC['_id']}&filename="
    status, body = server.request("GET", base + "a.bin", headers=USER)
    assert (status, body) == (200, b"\x00\x01binary")  # the door works
    leaks = secrets_of_the_file_system()
    for name in [*TRAVERSALS, "a.bin/../../../../etc/passwd", "%2e%2e%2fa.bin", "/a.bin", "./a.bin"]:
        for url in (base + name, f"/read-mail-attachment?integrationId=../../etc&messageId=..%2f..&filename={name}"):
            status, body = server.request("GET", url, headers=USER)
            assert status in (400, 404), (url, status, body[:100])
            assert not any(leak in body for leak in leaks), url
    assert server.request("GET", base + "..%2f..%2f..%2fetc%2fpasswd")[0] == 401  # and never without a user


# -- the suite-wide secrets check (tests/secretscan.py) sees what leaves through these doors ---------------------

@pytest.mark.skipif(not active(), reason="the secrets check is turned off (-p no:tests.secretscan)")
def test_the_secrets_check_sees_responses_replies_and_logs(server: Server) -> None:
    leak = register_secret("leak-" + os.urandom(8).hex())
    with caught() as found:
        assert rpc(server, json.dumps({"data": leak}).encode())[1]["data"] == leak  # echoed: a leak on purpose
        logging.getLogger("web.doors").debug("the secret is %s", leak)
    assert {f.split(":")[0] for f in found} == {"an HTTP response", "an RPC reply", "a log line"}, found
    assert not any(leak in f for f in found) and all("<secret>" in f for f in found)


# -- /rpc refuses proxied requests (issue 12 item 6) ----------------------------------------------------------------

@pytest.mark.parametrize("header", [{"userid": ""}, {"userid": "u1"}, {"hostname": "acme.erxes.io"}, USER])
def test_rpc_refuses_a_request_the_gateway_proxy_forwarded(server: Server, header: dict[str, str]) -> None:
    """erxes's gateway adds ``userid`` and ``hostname`` (``userid`` empty without a login) to all it forwards;
    its internal callers send only Content-Type. Refused before the body is read, from an allowed address."""
    status, reply = rpc(server, ENVELOPE, header)
    assert status == 403 and reply["status"] == "error" and "proxied" in reply["errorMessage"], reply
    status, reply = rpc(server, b"{" + b" " * (LIMIT // 2) + b"}", header)
    assert status == 403 and server.calls == []
    assert rpc(server, ENVELOPE) == (200, {"status": "success", "data": {"hello": "world"}})  # erxes's own caller


# -- GET /login starts a sign-in only for an owner or a listed user (issue 12 item 10) ------------------------------

def user_header(**user: Any) -> dict[str, str]:
    import base64

    return {"user": base64.b64encode(json.dumps(user).encode()).decode()}


def test_login_starts_a_sign_in_only_for_an_erxes_owner_or_a_listed_user() -> None:
    srv = Server(config(login_allowed_users="helper@example.com, u-42"))
    path = "/login?integrationId=inbox-1"
    assert srv.request("GET", path)[0] == 401
    for refused in (user_header(_id="u1"), user_header(_id="u1", isOwner=False), user_header(_id="u1", isOwner="true"),
                    user_header(_id="u1", role="admin", email="someone@example.com")):
        status, body = srv.request("GET", path, headers=refused)
        assert status == 403 and b"owner" in body, (refused, status, body)
    # past the check: the (fake) storage knows no integration, so 404 means the sign-in would have started
    for allowed in (user_header(_id="u1", isOwner=True), user_header(_id="u2", email="Helper@example.com"),
                    user_header(_id="u-42")):
        assert srv.request("GET", path, headers=allowed)[0] == 404, allowed
    assert config().login_allowed_users == ()
