"""A TCP forwarder that can cut, refuse or stall connections, for reconnect tests.

    with FaultProxy("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
        proxy.cut()          # close every open connection, both ways
        proxy.refuse(True)   # new connections are closed at once
        proxy.stall(True)    # connections stay open but nothing is forwarded either way

Everything runs in daemon threads, every blocking call has a timeout, and the number of connections is bounded.
"""
from __future__ import annotations

import logging
import selectors
import socket
import threading

__all__ = ["FaultProxy"]

logger = logging.getLogger(__name__)

_POLL = 0.05  # how often loops look at their flags


class _Pair:
    """A client connection and its upstream connection; closing one closes both."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class FaultProxy:
    """Listens on 127.0.0.1 (``.port``) and forwards each connection to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, max_connections: int = 32) -> None:
        self._target = (target_host, target_port)
        self._max = max_connections
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._threads: list[threading.Thread] = []
        self._refusing = False
        self._stalled = threading.Event()
        self._closed = threading.Event()
        self._spawn(self._accept_loop, "faultproxy-accept")

    def cut(self) -> None:
        """Close every open connection in both directions (the peers see the connection drop)."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            pair.close()
        logger.debug("cut %d connections", len(pairs))

    def refuse(self, on: bool) -> None:
        """While on, new connections are accepted and closed at once."""
        self._refusing = on

    def stall(self, on: bool) -> None:
        """While on, new connections are accepted but never forwarded, and open ones stop forwarding."""
        if on:
            self._stalled.set()
        else:
            self._stalled.clear()

    def close(self, timeout: float = 2.0) -> None:
        self._closed.set()
        self._listener.close()
        self.cut()
        for thread in self._threads:
            thread.join(timeout)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._pairs)

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # listener closed
            with self._lock:
                full = len(self._pairs) >= self._max
            if self._refusing or full:
                client.close()
                continue
            if self._stalled.is_set():
                self._add(_Pair(client, None))  # held open, never forwarded; cut() or close() ends it
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=2.0)
            except OSError as exc:
                logger.debug("upstream connect failed: %s", exc)
                client.close()
                continue
            pair = _Pair(client, upstream)
            self._add(pair)
            self._spawn(self._pump, "faultproxy-pump", pair)

    def _add(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.add(pair)

    def _pump(self, pair: _Pair) -> None:
        assert pair.upstream is not None
        peers = {pair.client: pair.upstream, pair.upstream: pair.client}
        for sock in peers:
            sock.settimeout(2.0)  # bounds sendall to a peer that stopped reading
        try:
            with selectors.DefaultSelector() as selector:
                for sock in peers:
                    selector.register(sock, selectors.EVENT_READ)
                while not pair.closed.is_set() and not self._closed.is_set():
                    if self._stalled.is_set():
                        pair.closed.wait(_POLL)
                        continue
                    for key, _ in selector.select(_POLL):
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                        if not data:
                            return
                        peers[key.fileobj].sendall(data)  # type: ignore[index]
        except (OSError, ValueError):
            pass  # cut, closed, or the peer went away
        finally:
            pair.close()
            with self._lock:
                self._pairs.discard(pair)
