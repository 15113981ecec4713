"""The Tornado app over real HTTP (tornado's test server on a loopback port)."""
from __future__ import annotations

from tornado.testing import AsyncHTTPTestCase

from web.app import WebDeps, make_app


class HealthTest(AsyncHTTPTestCase):
    ready = False

    def get_app(self):  # type: ignore[no-untyped-def]
        return make_app(None, deps=WebDeps(ready=lambda: self.ready))

    def test_503_until_serving_then_ok(self) -> None:
        response = self.fetch("/health")
        assert response.code == 503 and response.body == b"starting"
        self.ready = True
        response = self.fetch("/health")
        assert response.code == 200 and response.body == b"ok"
        assert response.headers["Content-Type"].startswith("text/plain")

    def test_unknown_path_is_404(self) -> None:
        assert self.fetch("/nope").code == 404
