"""The console's handler base (session, CSRF, headers, templates) and the sign-in/sign-out pages.

A kind's console pages (the IMAP kind's: kinds/imap/console) subclass :class:`ConsoleHandler`, put their own
template folder before the shell's in :attr:`ConsoleHandler.template_dirs` (their templates extend the shell's
``base.html``), and join the shell through the :class:`Console`: :meth:`Console.add_page` (the menu) and
:meth:`Console.add_live` (an event of the live stream, web/console/live.py)."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import tornado.template
import tornado.web

from runtime.errors import RequestError
from runtime.tenants import bind_request
from web.console.auth import SESSION_HOURS, LoginLimiter, PasswordCheck

__all__ = ["Console", "ConsoleHandler", "HomeHandler", "LoginHandler", "LogoutHandler", "MenuEntry", "TEMPLATES"]

logger = logging.getLogger(__name__)

TEMPLATES = str(Path(__file__).resolve().parent / "templates")
SESSION_COOKIE = "console_session"
XSRF_COOKIE = "console_xsrf"
# Pages load only their own script and style; nothing frames them; forms post only here.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True)
class MenuEntry:
    label: str
    href: str
    page: str  # the ``page`` its templates render with (marks the entry as the current one)
    full_only: bool = False  # shown only in the full console, not in the read-only ops view


@dataclass
class Console:
    """What every console handler shares (one per app)."""

    deps: Any  # web.app.WebDeps
    password: PasswordCheck
    cookie_secret: str
    full: bool  # standalone: conversations and changes; False: the read-only ops view
    trust_proxy: bool = False
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    menu: list[MenuEntry] = field(default_factory=list)  # the kinds' pages, in the order they were added
    # the live stream's events: name -> a cheap fingerprint that changes when the pages of that name must refresh
    # (blocking: called off the IOLoop, with the request's tenant bound)
    live: dict[str, Callable[[], str]] = field(default_factory=dict)

    def add_page(self, label: str, href: str, page: str, *, full_only: bool = False) -> None:
        """A kind's page in the menu (before the shell's Health); once per ``href``."""
        if all(entry.href != href for entry in self.menu):
            self.menu.append(MenuEntry(label, href, page, full_only))

    def add_live(self, name: str, fingerprint: Callable[[], str]) -> None:
        """``event: <name>`` on the live stream whenever ``fingerprint()`` changes (a page with
        ``data-live="<name>"`` then fetches its rows again)."""
        self.live[name] = fingerprint


class _SearchLoader(tornado.template.BaseLoader):
    """Templates by name from the first of several folders that has it (a kind's, then the shell's), so a kind's
    page may extend or include the shell's templates."""

    def __init__(self, roots: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.roots = roots

    def resolve_path(self, name: str, parent_path: str | None = None) -> str:
        return name

    def _create_template(self, name: str) -> tornado.template.Template:
        for root in self.roots:
            path = os.path.join(root, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    return tornado.template.Template(f.read(), name=name, loader=self)
        raise FileNotFoundError(f"no template {name!r} in {self.roots}")


class ConsoleHandler(tornado.web.RequestHandler):
    """Signed-in pages. Subclasses set ``public = True`` to be reachable without a session."""

    public = False
    template_dirs: tuple[str, ...] = (TEMPLATES,)  # searched in order (a kind's page puts its own first)

    def initialize(self, console: Console) -> None:
        self.console = console
        self.deps = console.deps
        self._settings: dict[str, Any] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        """The app's settings plus the console's XSRF cookie (its name and flags). Scoped to these handlers: the
        other routes of the app are untouched (no XSRF on /rpc, /graphql, /receive)."""
        if self._settings is None:
            self._settings = {**self.application.settings, "xsrf_cookie_name": XSRF_COOKIE,
                              "xsrf_cookie_kwargs": self.cookie_flags()}
        return self._settings

    def cookie_flags(self) -> dict[str, Any]:
        return {"httponly": True, "samesite": "Strict", "secure": self.is_https(), "path": "/"}

    def is_https(self) -> bool:
        if self.request.protocol == "https":
            return True
        forwarded = self.request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return self.console.trust_proxy and forwarded == "https"

    def client(self) -> str:
        return self.request.remote_ip or "unknown"

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def get_current_user(self) -> str | None:
        value = tornado.web.decode_signed_value(self.console.cookie_secret, SESSION_COOKIE,
                                                self.get_cookie(SESSION_COOKIE), max_age_days=SESSION_HOURS / 24,
                                                min_version=2)
        return value.decode() if value == b"admin" else None

    def get_template_path(self) -> str:
        return os.pathsep.join(self.template_dirs)

    def create_template_loader(self, template_path: str) -> tornado.template.BaseLoader:
        return _SearchLoader(template_path.split(os.pathsep))  # once per path: tornado keeps the loaders

    def prepare(self) -> None:
        if self.request.method not in ("GET", "HEAD"):
            self.check_xsrf_cookie()  # 403 without the form's token
        if not self.public and self.current_user is None:
            if self.request.method in ("GET", "HEAD") and "text/event-stream" not in self.request.headers.get(
                    "Accept", ""):
                self.redirect("/console/login?" + urllib.parse.urlencode({"next": self.request.uri or "/"}))
                return
            raise tornado.web.HTTPError(401)
        try:
            self.subdomain = bind_request(self.deps.tenants, self.request.headers)
        except RequestError as exc:
            raise tornado.web.HTTPError(400, reason=str(exc)[:100]) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        reason = {401: "Sign in first.", 403: "This form has expired or did not come from this console (CSRF "
                                            "token missing or wrong): reload the page and try again.",
                  404: "Not found.", 429: "Too many attempts: wait a few minutes."}.get(status_code, self._reason)
        self.finish(self.render_string("error.html", status=status_code, reason=reason))

    def get_template_namespace(self) -> dict[str, Any]:
        ns = super().get_template_namespace()
        ns.update(full=self.console.full, signed_in=self.current_user is not None, page="", when=when,
                  menu=[e for e in self.console.menu if self.console.full or not e.full_only])
        return ns

    def _request_summary(self) -> str:  # tornado's access log: no query (a search is the user's business)
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    async def blocking(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run MongoDB/actor/SMTP work off the IOLoop (with this request's tenant bound)."""
        return await asyncio.to_thread(fn, *args, **kwargs)


def when(value: Any) -> str:
    """A stored date as ``2026-12-07 01:59 UTC`` (— when missing)."""
    if not isinstance(value, dt.datetime):
        return "—"
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


class LoginHandler(ConsoleHandler):
    public = True

    def get(self) -> None:
        self.render("login.html", error="", next=self._next(), page="login")

    async def post(self) -> None:
        client = self.client()
        limiter = self.console.limiter
        if limiter.blocked(client):
            self.set_status(429)
            self.set_header("Retry-After", str(limiter.retry_after()))
            self.render("login.html", error="Too many failed sign-ins: wait a few minutes.", next=self._next(),
                        page="login")
            return
        attempt = self.get_body_argument("password", "")
        if not await self.blocking(self.console.password.matches, attempt):
            limiter.failed(client)
            logger.warning("Console: a wrong password from %s", client)
            self.set_status(401)
            self.render("login.html", error="Wrong password.", next=self._next(), page="login")
            return
        signed = tornado.web.create_signed_value(self.console.cookie_secret, SESSION_COOKIE, "admin", version=2)
        self.set_cookie(SESSION_COOKIE, signed.decode(), expires_days=SESSION_HOURS / 24, **self.cookie_flags())
        logger.info("Console: signed in from %s", client)
        self.redirect(self._next())

    def _next(self) -> str:
        target = self.get_argument("next", "/")
        # only a path of this site: no scheme, no //host, no backslash tricks
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            return "/"
        return target


class HomeHandler(ConsoleHandler):
    """``GET /`` when no kind's page claims it: the health page."""

    def get(self) -> None:
        self.redirect("/console/health")


class LogoutHandler(ConsoleHandler):
    public = True

    def post(self) -> None:
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.redirect("/console/login")
