"""The console in a real browser (issue 16's done-when): headless Chromium against an in-process runtime, the test
Dovecot and a local HTTP listener that hostile mail tries to call.

- sign in; add a Dovecot mailbox through the add-integration form; the health page's gauge counts it healthy; a mail
  appended over IMAP is listed within 5 s without a reload; open it; reply; the reply arrives in the sender's
  Dovecot mailbox;
- a mail full of hostile HTML (and a hostile subject and sender name) runs no script: the top page's global is
  untouched and the listener saw nothing (a control request at the end proves the listener works);
- a wrong password is refused, then rate-limited; a form post without its CSRF token is refused.
"""
from __future__ import annotations

import email
import email.policy
import http.server
import threading
import time
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Iterator

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from app.process import Runtime
from tests.conftest import MailServer, time_now, wait_for
from tests.e2e import runtime_config
from tests.secretscan import register_secret

PASSWORD = register_secret("browser-console-pw-41d9")


@pytest.fixture
def console(services: dict[str, str], mongo_url: str, prefix: str) -> Iterator[Runtime]:
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix, console_password=PASSWORD))
    try:
        rt.start()
        yield rt
    finally:
        rt.stop()


@pytest.fixture
def page(chrome: Any, console: Runtime) -> Any:
    chrome.delete_all_cookies()
    chrome.base = f"http://127.0.0.1:{console.web_port}"
    return chrome


class Listener:
    """A local HTTP server recording every request path: nothing in the console may ever reach it."""

    def __init__(self) -> None:
        seen: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"seen")

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.seen = seen
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait(driver: Any, timeout: float = 10) -> WebDriverWait:
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))


def sign_in(driver: Any, password: str = PASSWORD) -> None:
    driver.get(driver.base + "/")
    wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="login-password"]')))
    driver.find_element(By.CSS_SELECTOR, '[data-testid="login-password"]').send_keys(password)
    driver.find_element(By.CSS_SELECTOR, '[data-testid="login-submit"]').click()


def open_row(driver: Any, xpath: str) -> None:
    """Follow the first link of the row at ``xpath`` (live updates may replace the row meanwhile: retried)."""
    def follow(d: Any) -> bool:
        d.find_element(By.XPATH, xpath).find_element(By.TAG_NAME, "a").click()
        return True
    wait(driver).until(follow)


def html_mail(*, to: str, sender: str, subject: str, html: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = format_datetime(time_now())
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg.set_content("plain part")
    msg.add_alternative(html, subtype="html")
    return bytes(msg)


def add_mailbox(driver: Any, mailserver: MailServer, user: str, password: str, ca_cert: str) -> None:
    driver.get(driver.base + "/")
    form = driver.find_element(By.CSS_SELECTOR, 'form[data-testid="add-integration"]')
    values = {"host": mailserver.host, "port": str(mailserver.imap_port), "user": f"{user}@localhost",
              "mainUser": user, "password": password, "smtpHost": mailserver.host,
              "smtpPort": str(mailserver.submission_port)}
    for name, value in values.items():
        form.find_element(By.NAME, name).send_keys(value)
    tls = form.find_element(By.NAME, "tls")
    if tls.is_selected():
        tls.click()  # the test Dovecot's plain IMAP port
    form.find_element(By.NAME, "caCert").send_keys(ca_cert)  # its submission port's self-signed certificate
    form.submit()


def mails(mailserver: MailServer, user: str, password: str) -> list[Any]:
    with mailserver.client(user, password) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        fetched = client.fetch(uids, [b"BODY.PEEK[]"]) if uids else {}
    return [email.message_from_bytes(fetched[u][b"BODY[]"], policy=email.policy.default) for u in sorted(fetched)]


def test_sign_in_add_a_mailbox_see_mail_live_open_it_and_reply(page, console, mailserver, services):
    ca_cert = Path(services["CA_CERT"]).read_text()
    staff, staff_pw = mailserver.add_user("staff")
    customer, customer_pw = mailserver.add_user("cust")
    sign_in(page)
    wait(page).until(EC.presence_of_element_located((By.CSS_SELECTOR, 'form[data-testid="add-integration"]')))
    add_mailbox(page, mailserver, staff, staff_pw, ca_cert)
    wait(page).until(EC.url_contains("/console/mailboxes/"))
    page.get(page.base + "/")
    wait(page, 15).until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, '[data-testid="integration-row"][data-state="idle"]')))  # live: no reload

    page.get(page.base + "/console/health")  # the gauge: the same counts as /ready's mailboxHealth
    wait(page).until(EC.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="health-gauge"][data-total="1"]'
                                                                      '[data-healthy="1"][data-unhealthy="0"]')))
    wait(page).until(EC.presence_of_element_located(  # it follows the live stream (re-fetched once it is open)
        (By.CSS_SELECTOR, 'body[data-stream="open"]')))
    assert [a.text for a in page.find_elements(By.CSS_SELECTOR, "nav a")] == ["Mailboxes", "Conversations", "Health"]

    page.get(page.base + "/console/conversations")
    page.execute_script("window.__notReloaded = true")
    wait(page).until(EC.presence_of_element_located(  # the event stream is open before the mail comes
        (By.CSS_SELECTOR, 'body[data-stream="open"]')))
    mailserver.append(staff, staff_pw, html_mail(
        to=f"{staff}@localhost", sender=f"Carla Customer <{customer}@localhost>", subject="Where is order 77?",
        html="<p>Hello, where is <b>order 77</b>?</p>"))
    appended = time.monotonic()
    row = wait(page, 5).until(EC.presence_of_element_located(
        (By.XPATH, '//*[@data-testid="conversation-row"][contains(., "Where is order 77?")]')))
    listed_after = time.monotonic() - appended
    assert listed_after < 5 and page.execute_script("return window.__notReloaded") is True
    assert "Carla Customer" in row.text

    open_row(page, '//*[@data-testid="conversation-row"][contains(., "Where is order 77?")]')
    frame = wait(page).until(EC.presence_of_element_located((By.CSS_SELECTOR, "article iframe")))
    assert frame.get_attribute("sandbox") == ""
    page.switch_to.frame(frame)
    assert "order 77" in page.find_element(By.TAG_NAME, "body").text
    page.switch_to.default_content()
    assert page.find_element(By.NAME, "to").get_attribute("value") == f"{customer}@localhost"
    page.find_element(By.CSS_SELECTOR, '[data-testid="reply-body"]').send_keys("It ships today.\n\nThe team")
    page.find_element(By.CSS_SELECTOR, '[data-testid="reply-send"]').click()
    wait(page, 20).until(EC.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="reply-sent"]')))

    [got] = wait_for(lambda: mails(mailserver, customer, customer_pw), timeout=10, message="the reply delivered")
    assert got["Subject"] == "Re: Where is order 77?" and got["From"] == f"{staff}@localhost"
    assert "It ships today." in got.get_body(("plain",)).get_content()
    assert len(page.find_elements(By.CSS_SELECTOR, "article.message")) == 2  # the reply is in the thread


HOSTILE = """
<script>top.pwned = 'script'; new Image().src = 'http://127.0.0.1:{port}/script';</script>
<img src="x" onerror="top.pwned = 'onerror'; fetch('http://127.0.0.1:{port}/onerror')">
<img src="http://127.0.0.1:{port}/pixel" alt="pixel">
<svg onload="top.pwned = 'svg'"><image href="http://127.0.0.1:{port}/svg"/></svg>
<iframe src="http://127.0.0.1:{port}/iframe"></iframe>
<iframe srcdoc="&lt;script&gt;top.pwned='srcdoc'&lt;/script&gt;"></iframe>
<object data="http://127.0.0.1:{port}/object"></object><embed src="http://127.0.0.1:{port}/embed">
<link rel="stylesheet" href="http://127.0.0.1:{port}/link">
<style>@import url(http://127.0.0.1:{port}/import); body {{ background: url(http://127.0.0.1:{port}/css) }}</style>
<div style="background-image: url(http://127.0.0.1:{port}/inline-css)">styled</div>
<meta http-equiv="refresh" content="0;url=http://127.0.0.1:{port}/refresh">
<form action="http://127.0.0.1:{port}/form" method="post"><input name="x" autofocus onfocus="top.pwned='focus'"></form>
<a href="javascript:top.pwned='link'" id="bad">click</a>
<body onload="top.pwned = 'body'">visible hostile text</body>
"""


def test_hostile_html_runs_no_script_in_the_console(page, console, mailserver):
    listener = Listener()
    try:
        staff, staff_pw = mailserver.add_user("staff")
        sign_in(page)
        add_mailbox(page, mailserver, staff, staff_pw, "")
        wait(page).until(EC.url_contains("/console/mailboxes/"))
        inbox_id = page.current_url.split("/console/mailboxes/")[1].split("?")[0]
        wait_for(lambda: (console.storage.get_integration(inbox_id) or {}).get("state") == "idle", timeout=10,
                 message="the mailbox to IDLE")
        evil = "<img src=x onerror=\"top.pwned='subject'\"><script>top.pwned='subject'</script>"
        mailserver.append(staff, staff_pw, html_mail(
            to=f"{staff}@localhost", sender="\"<script>top.pwned='name'</script>\" <evil@localhost>",
            subject=evil, html=HOSTILE.format(port=listener.port)))
        stored = wait_for(lambda: console.storage.messages.find_one({"inboxIntegrationId": inbox_id,
                                                                       "ingestState": "done"}),
                          timeout=10, message="the hostile mail ingested")
        assert "<script>" in stored["body"]  # stored as it came: the console must defend itself

        page.get(page.base + "/console/conversations")
        wait(page).until(lambda d: "<script>" in d.find_element(  # the subject shown as text, not markup
            By.CSS_SELECTOR, '[data-testid="conversation-row"]').text)
        open_row(page, '//*[@data-testid="conversation-row"]')
        frame = wait(page).until(EC.presence_of_element_located((By.CSS_SELECTOR, "article iframe")))
        page.switch_to.frame(frame)
        wait(page).until(lambda d: "visible hostile text" in d.find_element(By.TAG_NAME, "body").text)
        for link in page.find_elements(By.TAG_NAME, "a"):
            link.click()  # a javascript: link (had it survived) would run now
        page.switch_to.default_content()
        time.sleep(1.0)  # give anything that might fire (timers, refresh, lazy loads) its chance
        assert page.execute_script("return typeof window.pwned") == "undefined"
        assert page.current_url.startswith(page.base + "/console/conversations/")
        assert listener.seen == []
        page.get(f"http://127.0.0.1:{listener.port}/control")  # the control: this listener does hear the browser
        heard = wait_for(lambda: listener.seen, timeout=5, message="the control request")
        assert heard[0] == "/control"  # the browser may follow it with its own /favicon.ico
    finally:
        listener.close()


def test_a_wrong_password_is_refused_then_rate_limited(page):
    def refusal(d: Any) -> str:
        found = d.find_elements(By.CSS_SELECTOR, '[data-testid="login-error"]')
        return found[0].text if found else ""

    for _ in range(5):
        sign_in(page, "not-the-password")
        assert "Wrong password." in wait(page).until(refusal)
    sign_in(page, PASSWORD)  # past the limit even the right one waits
    assert "Too many failed sign-ins" in wait(page).until(refusal)
    assert page.get_cookie("console_session") is None


def test_a_form_post_without_the_csrf_token_is_refused(page, console):
    sign_in(page)
    form = wait(page).until(EC.presence_of_element_located((By.CSS_SELECTOR, 'form[data-testid="add-integration"]')))
    for name, value in {"host": "127.0.0.1", "user": "x@localhost", "password": "pw-never-used"}.items():
        form.find_element(By.NAME, name).send_keys(value)
    page.execute_script("arguments[0].querySelector('input[name=_xsrf]').remove()", form)
    form.submit()
    wait(page).until(EC.presence_of_element_located((By.CSS_SELECTOR, '[role="alert"]')))
    assert "CSRF" in page.find_element(By.CSS_SELECTOR, '[role="alert"]').text
    assert console.storage.integrations.count_documents({}) == 0
