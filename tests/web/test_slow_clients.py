"""Slow clients cannot starve the server (issue 12 item 9), over real sockets to the production server
(actors/web.py's WebActor serving web/app.py's app, as tests/web/test_doors.py does): a connection's first request
head has a deadline, a body has one, a kept-alive connection is closed when idle, and past the connection cap a
new connection gets 503 at once. ``/health`` keeps answering while hundreds of half-open connections wait."""
from __future__ import annotations

import http.client
import select
import socket
import time

from runtime.config import load_config
from tests.conftest import wait_for
from tests.web.test_doors import REPO, Server, config

HALF_OPEN = 300


def closed_by_server(socks: list[socket.socket], within: float) -> list[socket.socket]:
    """The sockets the server has closed (EOF or reset) within ``within`` seconds; waits for all of them."""
    deadline = time.monotonic() + within
    pending, closed = list(socks), []
    while pending and time.monotonic() < deadline:
        readable, _, _ = select.select(pending, [], [], max(0.0, min(1.0, deadline - time.monotonic())))
        for sock in readable:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                pending.remove(sock)
                closed.append(sock)
    return closed


def health(port: int, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def connect(port: int, send: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if send:
        sock.sendall(send)
    return sock


def test_half_open_connections_are_closed_by_the_header_timeout_and_health_stays_up() -> None:
    srv = Server(config(http_header_timeout_seconds=1.0))
    socks = [connect(srv.port, b"GET /health HTTP/1.1\r\nHo" if i % 3 else b"") for i in range(HALF_OPEN)]
    try:
        started = time.monotonic()
        assert health(srv.port) == (200, b"ok")  # answered while all of them wait (speed: bench, not here)
        assert time.monotonic() - started < 10
        closed = closed_by_server(socks, within=20)
        assert len(closed) == HALF_OPEN, f"{HALF_OPEN - len(closed)} half-open connections are still open"
        assert health(srv.port) == (200, b"ok")
    finally:
        for sock in socks:
            sock.close()


def test_a_body_too_slow_is_cut_off_and_a_kept_alive_connection_is_closed_when_idle() -> None:
    srv = Server(config(http_body_timeout_seconds=1.0, http_idle_timeout_seconds=1.5))
    slow = connect(srv.port, b"POST /rpc/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{\"data\": ")
    idle = connect(srv.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        answer = b""
        while not answer.endswith(b"ok"):
            answer += idle.recv(65536) or b"<closed>"
            assert b"<closed>" not in answer, answer
        assert answer.startswith(b"HTTP/1.1 200 ")  # kept alive (HTTP/1.1): nothing more asked, it idles
        closed = closed_by_server([slow, idle], within=15)
        assert slow in closed, "the slow body's connection is still open"
        assert idle in closed, "the idle kept-alive connection is still open"
        assert srv.calls == []  # the slow body never reached the procedure
    finally:
        slow.close()
        idle.close()


def test_past_the_connection_cap_a_new_connection_gets_503_and_the_server_recovers() -> None:
    srv = Server(config(http_max_connections=5, http_header_timeout_seconds=2.0))
    held = [connect(srv.port, b"GET /he") for _ in range(5)]
    try:
        extra = connect(srv.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := extra.recv(65536):
            answer += chunk
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer, answer
        assert len(closed_by_server(held, within=15)) == 5  # the header deadline frees the slots
        assert wait_for(lambda: health(srv.port) == (200, b"ok"), timeout=10)
    finally:
        for sock in held:
            sock.close()


def test_server_settings_defaults_and_bounds() -> None:
    from web.limits import ServerLimits

    cfg = load_config(REPO / "configs.json", environ={"HTTP_MAX_CONNECTIONS": "250"})
    limits = ServerLimits.from_config(cfg)
    assert limits == ServerLimits(header_timeout=10.0, body_timeout=120.0, idle_timeout=60.0,
                                  max_header_bytes=64 * 1024, max_connections=250)
    assert ServerLimits.from_config(None) == ServerLimits()  # make_app(None): the same defaults
