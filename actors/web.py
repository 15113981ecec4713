"""Web: owns the thread that runs Tornado's IOLoop with the app (mopidy's HttpFrontend pattern).

Other threads reach the loop only through ``IOLoop.add_callback``.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pykka
import tornado.ioloop
import tornado.netutil

from runtime.errors import ConfigError
from web.limits import make_server

__all__ = ["WebActor"]

logger = logging.getLogger(__name__)


class WebActor(pykka.ThreadingActor):
    def __init__(self, app: Any, *, port: int, host: str = "0.0.0.0") -> None:
        super().__init__()
        self._app = app
        try:
            self._sockets = tornado.netutil.bind_sockets(port, host)
        except OSError as exc:
            raise ConfigError("PORT", f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        self.port = self._sockets[0].getsockname()[1]
        self._host = host
        self._loop: tornado.ioloop.IOLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="web-ioloop", daemon=True)

    def on_start(self) -> None:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the web server did not start within 10 s")
        logger.info("HTTP server listening on %s:%d", self._host, self.port)

    def on_stop(self) -> None:
        if self._loop is not None:
            self._loop.add_callback(self._loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        self._loop = tornado.ioloop.IOLoop.current()
        server = make_server(self._app)  # web/limits.py: timeouts and the connection cap of the app's settings
        server.add_sockets(self._sockets)
        self._loop.add_callback(self._started.set)
        self._loop.start()
        server.stop()
        self._loop.close(all_fds=False)
