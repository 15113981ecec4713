"""The outbound fence's connections (runtime/fence.py): to an address that was checked, never resolving the host
name (which stays the Host header, the SNI and the name the certificate is checked against), and every send and read
within one deadline: before each, the socket's timeout is set to the time left, so a server that trickles bytes
cannot hold a request past it. Plain :mod:`http.client` underneath; no proxies."""
from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
from typing import Any, Callable, Mapping, Protocol

from runtime.errors import OutboundError, OutboundTooLarge

__all__ = ["CONNECT_TIMEOUT", "Late", "connection", "exchange", "left", "read_body"]

CONNECT_TIMEOUT = 10.0  # at most this per address tried (within the deadline)
_CHUNK = 64 * 1024


def left(deadline: float) -> float:
    """Seconds until ``deadline`` (time.monotonic); :class:`Late` when it has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Late("the deadline passed")
    return remaining


class _Target(Protocol):
    """What a connection needs of the fence's checked URL (``runtime.fence._Target``)."""
    scheme: str
    port: int

    @property
    def shown(self) -> str: ...

    @property
    def request_path(self) -> str: ...


class Late(TimeoutError):
    """The deadline passed (a timeout like a socket's)."""


def connection(target: _Target, addresses: list[tuple[int, tuple[Any, ...]]], deadline: float,
               context: ssl.SSLContext) -> http.client.HTTPConnection:
    if target.scheme == "https":
        return _PinnedHTTPSConnection(target.host, target.port, addresses=addresses, deadline=deadline,
                                      context=context)
    return _PinnedHTTPConnection(target.host, target.port, addresses=addresses, deadline=deadline)


def exchange(conn: http.client.HTTPConnection, target: _Target, method: str, body: bytes | None,
             headers: Mapping[str, str], timeout: float) -> http.client.HTTPResponse:
    try:
        conn.request(method, target.request_path, body=body, headers={"User-Agent": "imap-runtime", **headers})
        return conn.getresponse()
    except Exception as exc:  # noqa: BLE001 - mapped onto the fence's errors, the cause dropped (it names the URL)
        raise _failure(target, exc, timeout) from None


def read_body(response: http.client.HTTPResponse, target: _Target, max_bytes: int, timeout: float) -> bytes:
    too_large = OutboundTooLarge(f"{target.shown} answered more than {max_bytes} bytes")
    length = response.getheader("Content-Length")
    if length and length.strip().isdigit() and int(length) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    try:
        while chunk := response.read(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise too_large
            chunks.append(chunk)
    except OutboundTooLarge:
        raise
    except Exception as exc:  # noqa: BLE001 - as in _exchange
        raise _failure(target, exc, timeout) from None
    return b"".join(chunks)


def _failure(target: _Target, exc: BaseException, timeout: float) -> OutboundError:
    if isinstance(exc, OutboundError):
        return exc
    if isinstance(exc, TimeoutError):
        return OutboundError(f"{target.shown} is too slow to download: the whole fetch must finish within "
                             f"{timeout:g} s")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return OutboundError(f"cannot fetch {target.shown}: certificate verify failed ({exc.verify_message})")
    if isinstance(exc, (OSError, http.client.HTTPException, ValueError)):
        return OutboundError(f"cannot fetch {target.shown}: {exc or type(exc).__name__}")
    raise exc


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to one of the checked ``addresses`` (never resolves ``host``, which stays the Host header)."""

    def __init__(self, host: str, port: int, *, addresses: list[tuple[int, tuple[Any, ...]]],
                 deadline: float) -> None:
        super().__init__(host, port)
        self._addresses = addresses
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = _DeadlineSocket(self._open(), self._deadline)

    def _open(self) -> socket.socket:
        error: OSError = OSError("no address")
        for family, sockaddr in self._addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(min(left(self._deadline), CONNECT_TIMEOUT))
                sock.connect(sockaddr)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except Late:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                error = exc
        raise error


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """The same, with TLS: SNI and the certificate are checked against ``host``."""

    default_port = 443

    def __init__(self, host: str, port: int, *, addresses: list[tuple[int, tuple[Any, ...]]], deadline: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(host, port, addresses=addresses, deadline=deadline)
        self._context = context

    def connect(self) -> None:
        raw = self._open()
        try:
            raw.settimeout(left(self._deadline))  # the handshake as a whole (CPython's ssl keeps one deadline)
            tls = self._context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        self.sock = _DeadlineSocket(tls, self._deadline)


class _DeadlineSocket:
    """A socket whose every send and read first sets its timeout to the time left before ``deadline``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        self._sock.settimeout(left(self._deadline))

    def sendall(self, data: Any) -> None:
        self._arm()
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock.makefile("rb", buffering=0), self._arm))

    def close(self) -> None:
        self._sock.close()  # the real close waits for the open reader, as a plain socket's does

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineReader(io.RawIOBase):
    def __init__(self, raw: Any, arm: Callable[[], None]) -> None:
        self._raw = raw
        self._arm = arm

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._arm()
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
