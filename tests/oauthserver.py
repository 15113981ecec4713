"""A small, real OAuth 2.0 authorization server on 127.0.0.1 for the tests (a thread in the test process).

It speaks what the runtime and Dovecot speak, over real HTTP:

- ``GET /authorize``: the authorization-code flow (PKCE S256 required when a challenge is sent). It signs in at once,
  as ``login_hint`` (the runtime sends the mailbox's login), and redirects to ``redirect_uri`` with ``code`` and
  ``state``.
- ``POST /token``: ``authorization_code`` and ``refresh_token`` grants, client authentication by the form or HTTP
  Basic. With ``rotate`` on, every refresh returns a new refresh token and the old one stops working (then it
  answers ``invalid_grant``, as Google and Microsoft do).
- ``POST /introspect``: RFC 7662, what Dovecot's ``passdb oauth2`` asks (``introspection_mode = post``):
  ``{"active": true, "username": ...}`` for a live access token, ``{"active": false}`` otherwise.

Controls for the tests: :meth:`OAuthServer.issue` (a refresh token as if the user had signed in before),
:meth:`expire_access_tokens`, :meth:`revoke`, ``lifetime`` and ``rotate``, ``fail_with`` (answer the token endpoint
with an HTTP error), and counters of the token endpoint's requests. :meth:`secrets` lists every secret it made (the
client secret, codes and tokens), and ``on_secret`` hears of each as it is made (tests/secretscan.py's
``register_secret``), so a test can look for them in logs, responses and storage.
"""
from __future__ import annotations

import base64
import collections
import hashlib
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["OAuthServer"]


@dataclass
class _Grant:
    username: str
    scope: str
    refresh: str = ""
    active: bool = True
    access: dict[str, float] = field(default_factory=dict)  # access token -> expiry (time.time())


class OAuthServer:
    def __init__(self, port: int = 0, *, client_id: str = "imap-runtime-tests", lifetime: float = 3600.0,
                 rotate: bool = False, on_secret: Callable[[str], Any] = lambda secret: None) -> None:
        self.client_id = client_id
        self._on_secret = on_secret
        self.client_secret = f"cs-{secrets.token_urlsafe(18)}"
        on_secret(self.client_secret)
        self.lifetime = lifetime
        self.rotate = rotate
        self.fail_with: int | None = None  # e.g. 503: the token endpoint answers this until reset to None
        self.token_requests: collections.Counter[str] = collections.Counter()  # grant_type -> requests
        self.refresh_requests: collections.Counter[str] = collections.Counter()  # username -> refresh requests
        self.introspections = 0
        self._lock = threading.Lock()
        self._grants: list[_Grant] = []
        self._codes: dict[str, dict[str, Any]] = {}
        self._made: list[str] = [self.client_secret]
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.oauth = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"oauth-{self.port}", daemon=True)

    # -- life ---------------------------------------------------------------------------------------------------------
    def start(self) -> OAuthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # -- controls -----------------------------------------------------------------------------------------------------
    def issue(self, username: str, scope: str = "mail") -> str:
        """A refresh token of ``username`` (as if they had signed in earlier)."""
        with self._lock:
            grant = _Grant(username, scope)
            self._grants.append(grant)
            grant.refresh = self._new("rt")
            return grant.refresh

    def expire_access_tokens(self, username: str | None = None) -> None:
        """Every access token (of ``username``) expires now; refresh tokens stay good."""
        with self._lock:
            for grant in self._grants:
                if username is None or grant.username == username:
                    grant.access = {token: 0.0 for token in grant.access}

    def revoke(self, username: str) -> None:
        """The user revoked our access: refresh and access tokens stop working."""
        with self._lock:
            for grant in self._grants:
                if grant.username == username:
                    grant.active = False

    def refresh_token_of(self, username: str) -> str | None:
        """The refresh token that works now for ``username`` (the latest, after rotations)."""
        with self._lock:
            live = [g.refresh for g in self._grants if g.username == username and g.active and g.refresh]
            return live[-1] if live else None

    def access_tokens_of(self, username: str) -> list[str]:
        with self._lock:
            return [t for g in self._grants if g.username == username for t in g.access]

    def secrets(self) -> list[str]:
        """Everything secret this server made: the client secret, codes, refresh and access tokens."""
        with self._lock:
            return list(self._made)

    # -- the endpoints (called by _Handler, under no lock) ----------------------------------------------------------
    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or not redirect_uri.startswith(("http://", "https://")):
            return 400, {}, {"error": "invalid_request", "error_description": "unknown client or no redirect_uri"}
        if query.get("response_type") != "code":
            return 400, {}, {"error": "unsupported_response_type"}
        challenge = query.get("code_challenge", "")
        if challenge and query.get("code_challenge_method") != "S256":
            return 400, {}, {"error": "invalid_request", "error_description": "only S256 challenges"}
        with self._lock:
            code = self._new("code")
            self._codes[code] = {"username": query.get("login_hint") or "nobody", "redirect_uri": redirect_uri,
                                 "challenge": challenge, "scope": query.get("scope", ""), "expires": time.time() + 60}
        params = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        sep = "&" if "?" in redirect_uri else "?"
        return 302, {"Location": redirect_uri + sep + urllib.parse.urlencode(params)}, None

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, Any]:
        grant_type = form.get("grant_type", "")
        with self._lock:
            self.token_requests[grant_type] += 1
        if self.fail_with is not None:
            return self.fail_with, {"error": "temporarily_unavailable"}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            client_id, _, client_secret = (urllib.parse.unquote(p) for p in decoded.partition(":"))
        if client_id != self.client_id or client_secret != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
        with self._lock:
            if grant_type == "authorization_code":
                return self._code_grant(form)
            if grant_type == "refresh_token":
                return self._refresh_grant(form)
        return 400, {"error": "unsupported_grant_type"}

    def introspect(self, token: str) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            self.introspections += 1
            for grant in self._grants:
                expiry = grant.access.get(token)
                if expiry is not None and grant.active and expiry > now:
                    return {"active": True, "username": grant.username, "scope": grant.scope, "exp": int(expiry),
                            "client_id": self.client_id}
        return {"active": False}

    # -- internals (the lock is held) ---------------------------------------------------------------------------------
    def _code_grant(self, form: dict[str, str]) -> tuple[int, Any]:
        found = self._codes.pop(form.get("code", ""), None)
        if found is None or found["expires"] < time.time() or found["redirect_uri"] != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant", "error_description": "unknown, used or expired code"}
        if found["challenge"]:
            verifier = form.get("code_verifier", "").encode()
            expected = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
            if expected != found["challenge"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        grant = _Grant(found["username"], found["scope"])
        grant.refresh = self._new("rt")
        self._grants.append(grant)
        return 200, self._tokens(grant, with_refresh=True)

    def _refresh_grant(self, form: dict[str, str]) -> tuple[int, Any]:
        token = form.get("refresh_token", "")
        grant = next((g for g in self._grants if g.refresh == token), None)
        if grant is not None:
            self.refresh_requests[grant.username] += 1
        if grant is None or not grant.active:
            return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
        if self.rotate:
            grant.refresh = self._new("rt")  # the old one is gone: invalid_grant from now on
        return 200, self._tokens(grant, with_refresh=self.rotate)

    def _tokens(self, grant: _Grant, *, with_refresh: bool) -> dict[str, Any]:
        access = self._new("at")
        grant.access[access] = time.time() + self.lifetime
        out: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": self.lifetime,
                               "scope": grant.scope}
        if with_refresh:
            out["refresh_token"] = grant.refresh
        return out

    def _new(self, kind: str) -> str:
        value = f"{kind}-{secrets.token_urlsafe(24)}"
        self._made.append(value)
        self._on_secret(value)
        return value


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "oauthserver/1"

    @property
    def oauth(self) -> OAuthServer:
        return self.server.oauth  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # request lines carry codes and tokens: never printed

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urllib.parse.urlsplit(self.path)
        if parts.path != "/authorize":
            return self._json(404, {"error": "not_found"})
        status, headers, body = self.oauth.authorize(dict(urllib.parse.parse_qsl(parts.query)))
        if status == 302:
            self.send_response(302)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._json(status, body)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode("utf-8")))
        path = urllib.parse.urlsplit(self.path).path
        if path == "/token":
            return self._json(*self.oauth.token(form, self.headers.get("Authorization")))
        if path == "/introspect":
            return self._json(200, self.oauth.introspect(form.get("token", "")))
        return self._json(404, {"error": "not_found"})

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)
