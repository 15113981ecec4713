"""The web console over real HTTP (issue 16): an in-process runtime on a real port, driven with urllib.

Sign-in (refusal, 429 past the limit, cookie flags), CSRF (a console POST without the token is refused while
/rpc is not affected), the add form validated by createIntegration itself, the ops view with STANDALONE=false,
and the pages' escaping. The browser tests are in tests/browser/.
"""
from __future__ import annotations

import http.cookiejar
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator

import pytest

from runtime.config import load_config
from app.process import Runtime
from tests.e2e import runtime_config
from tests.secretscan import register_secret

PASSWORD = register_secret("console-pw-7f3a9c2e")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Browser:
    """Cookies kept, redirects not followed: each answer is seen as it is."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def request(self, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=15) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def token(self, path: str = "/console/login") -> str:
        status, _, page = self.request(path)
        assert status == 200, page
        return re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)

    def sign_in(self, password: str = PASSWORD, headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], str]:
        return self.request("/console/login", {"_xsrf": self.token(), "password": password, "next": "/"},
                            headers=headers)


def start(services: dict[str, str], mongo_url: str, prefix: str, **overrides: Any) -> Runtime:
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix, **overrides))
    rt.start()
    return rt


@pytest.fixture
def console(services: dict[str, str], mongo_url: str, prefix: str) -> Iterator[Runtime]:
    rt = start(services, mongo_url, prefix, console_password=PASSWORD)
    try:
        yield rt
    finally:
        rt.stop()


def test_pages_need_a_session_and_a_sign_in_sets_a_strict_httponly_cookie(console):
    browser = Browser(console.web_port)
    status, headers, _ = browser.request("/")
    assert status == 302 and headers["Location"].startswith("/console/login?next=")
    status, headers, _ = browser.sign_in(headers={"X-Forwarded-Proto": "https"})
    assert status == 302 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "console_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain http: X-Forwarded-Proto is not trusted by default
    assert PASSWORD not in cookie
    status, headers, page = browser.request("/")
    assert status == 200 and 'data-testid="add-integration"' in page
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    other = Browser(console.web_port)  # after sign-in only a local path is followed
    status, headers, _ = other.request("/console/login", {"_xsrf": other.token(), "password": PASSWORD,
                                                          "next": "//evil.example/x"})
    assert status == 302 and headers["Location"] == "/"


def test_a_wrong_password_is_refused_then_rate_limited(console):
    browser = Browser(console.web_port)
    for _ in range(5):
        status, _, page = browser.sign_in("not-the-password")
        assert status == 401 and "Wrong password." in page and "console_session" not in str(browser.jar)
    status, headers, page = browser.sign_in("not-the-password")
    assert status == 429 and int(headers["Retry-After"]) > 0
    status, _, _ = browser.sign_in()  # even the right one waits now
    assert status == 429 and "console_session" not in str(browser.jar)


def test_a_console_post_without_the_csrf_token_is_refused_and_rpc_needs_none(console):
    browser = Browser(console.web_port)
    assert browser.sign_in()[0] == 302
    details = {"host": "127.0.0.1", "user": "a@localhost", "password": "whatever-pw"}
    status, _, page = browser.request("/console/mailboxes", details)
    assert status == 403 and "CSRF" in page
    status, _, _ = browser.request("/console/mailboxes", {**details, "_xsrf": "2|00000000|deadbeef|1"})
    assert status == 403
    status, _, _ = browser.request("/console/login", {"password": PASSWORD})
    assert status == 403  # the sign-in form too
    assert console.storage.integrations.count_documents({}) == 0
    # the app's other routes do not require the console's token
    req = urllib.request.Request(f"http://127.0.0.1:{console.web_port}/rpc/getStatus", method="POST",
                                 data=json.dumps({"subdomain": "os", "data": {"integrationId": "x"}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["status"] == "success"


def test_the_add_form_is_validated_by_create_integration(console):
    browser = Browser(console.web_port)
    browser.sign_in()
    token = browser.token("/")
    status, _, page = browser.request("/console/mailboxes", {
        "_xsrf": token, "host": "bad..host", "user": "a@localhost", "password": "pw-x", "port": "99999"})
    assert status == 400
    # createIntegration's own words (kinds/imap/details.py parse_details), the form kept but never the password
    assert "doc.data.host is not a valid host name" in page
    assert 'value="a@localhost"' in page and "pw-x" not in page
    status, _, page = browser.request("/console/mailboxes", {"_xsrf": token, "host": "127.0.0.1", "port": "99999",
                                                             "user": "a@localhost", "password": "pw-x"})
    assert status == 400 and "doc.data.port must be between 1 and 65535, got 99999" in page
    assert console.storage.integrations.count_documents({}) == 0


def test_an_added_mailbox_is_listed_with_its_state_and_log_and_can_be_removed(console, mailserver):
    user, password = mailserver.add_user()
    browser = Browser(console.web_port)
    browser.sign_in()
    token = browser.token("/")
    status, headers, _ = browser.request("/console/mailboxes", {
        "_xsrf": token, "host": mailserver.host, "port": str(mailserver.imap_port), "user": f"{user}@localhost",
        "mainUser": user, "password": password, "smtpHost": mailserver.host,
        "smtpPort": str(mailserver.submission_port)})  # tls unchecked: the test Dovecot's plain port
    assert status == 302, headers
    inbox_id = headers["Location"].split("/")[3].split("?")[0]
    doc = console.storage.get_integration(inbox_id)
    assert doc["user"] == f"{user}@localhost" and doc["tls"] is False and doc["port"] == mailserver.imap_port
    from tests.conftest import wait_for

    wait_for(lambda: 'data-state="idle"' in browser.request("/?fragment=rows")[2], timeout=10,
             message="the mailbox idle on the page")
    status, _, page = browser.request(f"/console/mailboxes/{inbox_id}")
    assert status == 200 and f"integration {inbox_id} created for {user}@localhost" in page
    assert password not in page
    status, headers, _ = browser.request(f"/console/mailboxes/{inbox_id}/remove", {"_xsrf": token})
    assert status == 302 and console.storage.get_integration(inbox_id) is None


def test_with_erxes_the_console_is_off_unless_the_ops_view_is_on(services, mongo_url, prefix):
    rt = start(services, mongo_url, prefix, standalone=False, console_password=PASSWORD)
    try:
        assert Browser(rt.web_port).request("/")[0] == 404
    finally:
        rt.stop()
    rt = start(services, mongo_url, prefix, standalone=False, console_password=PASSWORD, console_ops_view=True)
    try:
        browser = Browser(rt.web_port)
        assert browser.sign_in()[0] == 302
        status, _, page = browser.request("/")
        assert status == 200 and 'data-testid="add-integration"' not in page
        assert browser.request("/console/conversations")[0] == 404
        status, _, _ = browser.request("/console/mailboxes", {"_xsrf": browser.token("/"), "host": "h",
                                                              "user": "u@x", "password": "pw-pw-pw"})
        assert status == 403
    finally:
        rt.stop()


def test_behind_a_trusted_proxy_https_marks_the_cookies_secure(services, mongo_url, prefix):
    rt = start(services, mongo_url, prefix, console_password=PASSWORD, console_trust_proxy=True)
    try:
        browser = Browser(rt.web_port)
        status, headers, _ = browser.sign_in(headers={"X-Forwarded-Proto": "https"})
        assert status == 302 and "Secure" in headers["Set-Cookie"]
        status, headers, _ = Browser(rt.web_port).sign_in()  # plain http without the header: not Secure
        assert status == 302 and "Secure" not in headers["Set-Cookie"]
    finally:
        rt.stop()


def test_console_settings_are_read_and_checked():
    config = load_config(environ={"CONSOLE_PASSWORD": "long-enough", "CONSOLE_OPS_VIEW": "true",
                                  "CONSOLE_TRUST_PROXY": "yes"})
    assert (config.console_password, config.console_ops_view, config.console_trust_proxy) == (
        "long-enough", True, True)
    assert "long-enough" not in repr(config)
    from runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="CONSOLE_PASSWORD") as caught:
        load_config(environ={"CONSOLE_PASSWORD": "short"})
    assert "short" not in str(caught.value).replace("CONSOLE_PASSWORD", "")


def test_without_a_password_a_one_time_one_is_printed_once_and_works(services, mongo_url, prefix, capsys, caplog):
    caplog.set_level(logging.INFO, logger="web.console")
    rt = start(services, mongo_url, prefix)
    try:
        printed = capsys.readouterr().err
        found = re.findall(r"one-time password (\S+)", printed)
        assert len(found) == 1, printed
        one_time = register_secret(found[0])  # the suite-wide check: never in a log record or a response
        assert not any(one_time in r.getMessage() for r in caplog.records)
        assert "no CONSOLE_PASSWORD set" in caplog.text
        assert Browser(rt.web_port).sign_in("not-it-at-all")[0] == 401
        assert Browser(rt.web_port).sign_in(one_time)[0] == 302
        assert one_time not in json.dumps(list(rt.storage.db["imap_console"].find({}, {"_id": 0})))
    finally:
        rt.stop()


def test_the_login_is_tested_first_with_the_servers_answer_and_nothing_saved(console, mailserver):
    user, password = mailserver.add_user()
    browser = Browser(console.web_port)
    browser.sign_in()
    token = browser.token("/")
    form = {"_xsrf": token, "host": mailserver.host, "port": str(mailserver.imap_port), "user": f"{user}@localhost",
            "mainUser": user}
    status, _, page = browser.request("/console/mailboxes/test", {**form, "password": password})
    assert status == 200 and f"The server accepted the login of {user} at {mailserver.host}" in page
    status, _, page = browser.request("/console/mailboxes/test", {**form, "password": "wrong-password-x"})
    assert status == 400 and "The login failed:" in page and "AUTHENTICATIONFAILED" in page
    status, _, page = browser.request("/console/mailboxes/test", {**form, "password": password, "port": "0"})
    assert status == 400 and "doc.data.port must be between 1 and 65535, got 0" in page  # parse_details' words
    assert password not in page and console.storage.integrations.count_documents({}) == 0


def test_a_mailbox_is_edited_through_update_integration_keeping_its_password(console, mailserver):
    from tests.conftest import wait_for

    user, password = mailserver.add_user()
    browser = Browser(console.web_port)
    browser.sign_in()
    token = browser.token("/")
    status, headers, _ = browser.request("/console/mailboxes", {
        "_xsrf": token, "host": mailserver.host, "port": str(mailserver.imap_port), "user": f"{user}@localhost",
        "smtpHost": mailserver.host, "smtpPort": str(mailserver.submission_port), "password": password})
    inbox_id = headers["Location"].split("/")[3].split("?")[0]
    status, _, page = browser.request(f"/console/mailboxes/{inbox_id}/edit")
    assert status == 200 and f'value="{user}@localhost"' in page and password not in page
    status, headers, _ = browser.request(f"/console/mailboxes/{inbox_id}/edit", {
        "_xsrf": token, "host": mailserver.host, "port": str(mailserver.imap_port), "user": f"{user}@localhost",
        "mainUser": user, "smtpHost": mailserver.host, "smtpPort": str(mailserver.submission_port),
        "password": ""})
    assert status == 302 and headers["Location"] == f"/console/mailboxes/{inbox_id}?updated=1"
    doc = console.storage.get_integration(inbox_id)
    assert doc["mainUser"] == user and doc["smtpPort"] == str(mailserver.submission_port)
    assert doc["password"] == password  # an empty password keeps the stored one (updateIntegration's rule)
    wait_for(lambda: (console.storage.get_integration(inbox_id) or {}).get("state") == "idle", timeout=10,
             message="the edited mailbox to IDLE")
    status, _, page = browser.request(f"/console/mailboxes/{inbox_id}/edit", {
        "_xsrf": token, "host": "", "user": f"{user}@localhost"})
    assert status == 400 and "doc.data is missing host" in page
    assert browser.request("/console/mailboxes/nope/edit", {"_xsrf": token, "host": "h", "user": "u@x"})[0] == 404


def test_conversations_search_status_sandboxed_body_and_attachment(console, mailserver):
    from email.message import EmailMessage

    from tests.conftest import make_mail, wait_for

    user, password = mailserver.add_user()
    browser = Browser(console.web_port)
    browser.sign_in()
    token = browser.token("/")
    _, headers, _ = browser.request("/console/mailboxes", {
        "_xsrf": token, "host": mailserver.host, "port": str(mailserver.imap_port), "user": f"{user}@localhost",
        "mainUser": user, "password": password})
    inbox_id = headers["Location"].split("/")[3].split("?")[0]
    wait_for(lambda: (console.storage.get_integration(inbox_id) or {}).get("state") == "idle", timeout=10,
             message="the mailbox to IDLE")
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", sender="Olga Orders <olga@example.com>",
                                                subject="Refund for order 9"))
    wait_for(lambda: console.storage.messages.count_documents({"ingestState": "done"}) == 1, timeout=10,
             message="the first mail ingested")  # so that the second one is the newer conversation
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Paul Payer <paul@example.com>", f"{user}@localhost", "Invoice March"
    msg["Message-ID"] = "<inv-march@example.com>"
    msg.set_content("see attached")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="invoice.pdf")
    mailserver.append(user, password, bytes(msg))
    wait_for(lambda: console.storage.messages.count_documents({"ingestState": "done"}) == 2, timeout=10,
             message="both mails ingested")

    _, _, page = browser.request("/console/conversations")
    assert page.index("Invoice March") < page.index("Refund for order 9")  # newest first
    for query, shown, hidden in (("olga", "Refund for order 9", "Invoice March"),  # sender address
                                 ("paul payer", "Invoice March", "Refund"),        # sender name
                                 ("REFUND", "Refund for order 9", "Invoice March"),  # subject, any case
                                 ("(.*)", None, None)):                          # a regex is taken literally
        _, _, page = browser.request("/console/conversations?" + urllib.parse.urlencode({"q": query}))
        if shown is None:
            assert page.count('data-testid="conversation-row"') == 0
        else:
            assert page.count('data-testid="conversation-row"') == 1 and shown in page and hidden not in page

    doc = console.storage.messages.find_one({"messageId": "<inv-march@example.com>"})
    conversation_id = doc["inboxConversationId"]
    status, _, page = browser.request(f"/console/conversations/{conversation_id}")
    assert status == 200 and f'src="/console/messages/{doc["_id"]}/body"' in page and '<iframe sandbox=""' in page
    status, headers, body = browser.request(f"/console/messages/{doc['_id']}/body")
    assert status == 200 and headers["Content-Security-Policy"].startswith("sandbox; default-src 'none'")
    assert "see attached" in body
    link = re.search(r'href="(/console/read-mail-attachment\?[^"]+)"', page).group(1).replace("&amp;", "&")
    status, headers, data = browser.request(link)
    assert status == 200 and data == "%PDF-1.4 fake" and headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"].startswith('attachment; filename="invoice.pdf"')
    assert Browser(console.web_port).request(link)[0] == 302  # not without a session

    status, _, _ = browser.request(f"/console/conversations/{conversation_id}/status",
                                   {"_xsrf": token, "status": "closed"})
    assert status == 302
    assert console.storage.db["standalone_conversations"].find_one({"_id": conversation_id})["status"] == "closed"
    assert 'data-status="closed"' in browser.request("/console/conversations?fragment=rows")[2]


def test_the_health_page_gauges_mailboxes_by_health_and_without_a_kind_s_pages_home_is_health(
        services, mongo_url, storage, db):
    """Issue 15: the health page's gauge counts healthy, degraded and unHealthy mailboxes from the Probe that /ready
    and /metrics read; the shell alone (no kind's routes) still signs in, and its ``/`` is the health page."""
    from actors.web import WebActor
    from web.app import WebDeps, make_app
    from web.ops import Probe

    db.imap_integrations.insert_many([
        {"inboxId": "ok", "state": "idle", "healthStatus": "healthy", "error": None},
        {"inboxId": "skipped", "state": "idle", "healthStatus": "healthy", "error": "folder 'Billing' skipped"},
        {"inboxId": "tls", "state": "backoff", "healthStatus": "unHealthy", "error": "certificate verify failed"},
        {"inboxId": "legacy", "state": "idle"},
    ])
    probe = Probe(storage=storage, broker=None, redis_client=None, timeout=2.0)
    config = runtime_config(services, mongo_url=mongo_url, prefix="", console_password=PASSWORD)
    web = WebActor.start(make_app(config, deps=WebDeps(ready=lambda: True, storage=storage, probe=probe)),
                         port=0, host="127.0.0.1")
    try:
        browser = Browser(web.proxy().port.get(timeout=5))
        assert browser.sign_in()[0] == 302
        status, headers, _ = browser.request("/")
        assert status == 302 and headers["Location"] == "/console/health"
        status, _, page = browser.request("/console/health")
        assert status == 200 and 'data-testid="health-gauge"' in page and 'data-live="mailboxes"' in page
        assert 'data-healthy="2"' in page and 'data-degraded="1"' in page and 'data-unhealthy="1"' in page
        assert '<meter min="0" max="4" value="2"' in page
        assert 'imap_mailboxes_health{health=&quot;unHealthy&quot;,kind=&quot;imap&quot;} 1.0' in page  # beside it
        assert ">Mailboxes</a>" not in page and ">Conversations</a>" not in page  # no kind added its pages
        db.imap_integrations.update_one({"inboxId": "tls"}, {"$set": {"healthStatus": "healthy", "error": None}})
        status, _, fragment = browser.request("/console/health?fragment=gauge")  # what the live page fetches
        assert status == 200 and "<html" not in fragment and 'data-healthy="3"' in fragment
        assert 'data-unhealthy="0"' in fragment
        assert browser.request("/console/mailboxes/ok")[0] == 404  # the IMAP kind's pages are its own
    finally:
        web.stop(timeout=5)
        probe.close()
