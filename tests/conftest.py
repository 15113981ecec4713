"""Shared fixtures: the real servers (started once per session by scripts/services.sh), isolated per test.

Each test gets its own MongoDB database, its own broker queue suffix and its own Dovecot user, so tests never see
each other's data. Every wait has a timeout.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Callable, Iterator

import pika
import pykka
import pymongo
import pytest
from imapclient import IMAPClient

pytest_plugins = ["tests.secretscan"]  # the suite-wide secrets check: no secret in any log, response or database

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = Path("/tmp/imap-runtime/test")
TEST_PORTS = {"MONGO_PORT": "27217", "IMAP_PORT": "11143", "IMAPS_PORT": "11993", "LMTP_PORT": "11024",
              "SUBMISSION_PORT": "11587", "SMTP_PORT": "11025", "PRIVATE_AMQP_PORT": "11672",
              "PRIVATE_REDIS_PORT": "11379", "OAUTH_PORT": "11980",
              "CYRUS_IMAP_PORT": "11243", "CYRUS_IMAPS_PORT": "11293"}  # as scripts/test.sh


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "multinode: several runtime processes share the mailboxes (about 4 minutes; "
                                       "run alone with -m multinode)")


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    """The servers' addresses. scripts/test.sh starts them; a bare ``pytest`` starts them here (and leaves them)."""
    env_file = os.environ.get("IMAP_RUNTIME_SERVICES_ENV")
    if not env_file:
        subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), "start", str(STATE_DIR)],
                       env={**os.environ, **TEST_PORTS}, check=True, timeout=300)
        env_file = str(STATE_DIR / "services.env")
    return read_env_file(Path(env_file))


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


@pytest.fixture
def mongo_url(services: dict[str, str]) -> Iterator[str]:
    base = services["MONGO_URL"]
    name = f"t_{uuid.uuid4().hex[:10]}"
    url = base.replace("/imap_runtime?", f"/{name}?")
    yield url
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture
def db(mongo_url: str) -> Iterator[Any]:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000, tz_aware=True)
    yield client.get_default_database()
    client.close()


@pytest.fixture
def storage(mongo_url: str) -> Iterator[Any]:
    """The runtime's Storage on a fresh database, with its indexes."""
    from runtime.storage import Storage

    store = Storage(mongo_url)
    store.ensure_indexes()
    yield store
    store.close()


@pytest.fixture
def amqp_url(services: dict[str, str]) -> str:
    return services["RABBITMQ_HOST"]


@pytest.fixture
def prefix(amqp_url: str) -> Iterator[str]:
    """A queue-name suffix of this test's own; its queues are deleted afterwards."""
    suffix = f".t{uuid.uuid4().hex[:8]}"
    yield suffix
    delete_queues(amqp_url, suffix)


def delete_queues(amqp_url: str, suffix: str) -> None:
    from kinds.imap.procedures import ImapProcedures
    from runtime.standalone import Standalone

    names = [*ImapProcedures(storage=None, supervisor=None).rpc_procedures(),
             *ImapProcedures(storage=None, supervisor=None).plain_procedures()]
    for svc in ("core", "contacts"):
        fake = Standalone.__new__(Standalone)
        fake._customer_service = svc  # type: ignore[attr-defined]
        names += [*Standalone.rpc_procedures(fake), *Standalone.plain_procedures(fake)]
    names += [f"api:{n}" for n in ("createIntegration", "updateIntegration", "removeIntegrations", "getStatus",
                                   "api_to_integrations")]  # the api kind's (kinds/api/procedures.py)
    names.append("imap-runtime:emulation")  # runtime/detect.py's marker of an in-process emulation
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = conn.channel()
        for name in names:
            channel.queue_delete(name + suffix)
    finally:
        conn.close()


@pytest.fixture
def runtime(services: dict[str, str], mongo_url: str, prefix: str) -> Iterator[Any]:
    """An in-process runtime (standalone: the erxes emulation) on this test's database and queue suffix."""
    from app.process import Runtime
    from tests.e2e import runtime_config

    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix))
    try:
        rt.start()
        yield rt
    finally:
        rt.stop()


@pytest.fixture
def caller(amqp_url: str, prefix: str) -> Iterator[Any]:
    """Plays erxes on the broker (tests/e2e.py Caller)."""
    from tests.e2e import Caller

    c = Caller(amqp_url, prefix)
    yield c
    c.close()


@pytest.fixture
def proxies() -> Iterator[list[Any]]:
    """FaultProxy objects a test makes (tests/faultproxy.py); closed afterwards."""
    made: list[Any] = []
    yield made
    for proxy in made:
        proxy.close()


class MailServer:
    """The test Dovecot: users are added per test; mail is appended over IMAP. ``tests/cyrus.py`` has the same face
    for Cyrus: a test that takes ``mailserver`` runs on both with ``@both_servers``."""

    kind = "dovecot"
    separator = "/"

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.host = "127.0.0.1"
        self.imap_port = int(env["IMAP_PORT"])
        self.imaps_port = int(env["IMAPS_PORT"])
        self.ca_cert_path = Path(env["CA_CERT"])
        self.smtp_port = int(env["SMTP_PORT"])
        self.submission_port = int(env["SUBMISSION_PORT"])

    def add_user(self, prefix: str = "u") -> tuple[str, str]:
        user = f"{prefix}{uuid.uuid4().hex[:10]}"
        password = f"pw-{uuid.uuid4().hex[:12]}"
        self.set_password(user, password)
        return user, password

    def set_password(self, user: str, password: str) -> None:
        from tests.secretscan import register_secret  # the suite-wide secrets check must never see it

        register_secret(password)
        subprocess.run(["bash", str(REPO / "scripts" / "mailserver.sh"), "adduser", self.env["MAIL_DIR"], user,
                        password], check=True, timeout=30, capture_output=True)

    def folder(self, name: str) -> str:
        """The server's own name of a personal folder ``name`` (Dovecot: the name itself)."""
        return name

    @property
    def ca_cert(self) -> str:
        """PEM text of the CA that signed the server's certificate."""
        return self.ca_cert_path.read_text()

    def client(self, user: str, password: str) -> IMAPClient:
        client = IMAPClient(self.host, port=self.imap_port, ssl=False, timeout=10)
        client.login(user, password)
        return client

    def append(self, user: str, password: str, raw: bytes, folder: str = "INBOX") -> None:
        with self.client(user, password) as client:
            client.append(folder, raw)

    def append_many(self, user: str, password: str, raws: list[bytes], folder: str = "INBOX") -> None:
        with self.client(user, password) as client:
            for raw in raws:
                client.append(folder, raw)

    def details(self, user: str, password: str, **extra: Any) -> dict[str, Any]:
        return {"host": self.host, "port": self.imap_port, "tls": False, "user": f"{user}@localhost",
                "mainUser": user, "password": password, "smtpHost": self.host, "smtpPort": str(self.submission_port),
                **extra}


@pytest.fixture
def mailserver(services: dict[str, str], request: Any) -> MailServer:
    """Dovecot; with ``@both_servers`` (indirect parametrization) Dovecot and then Cyrus."""
    if getattr(request, "param", "dovecot") == "cyrus":
        from tests.cyrus import CyrusServer

        if "CYRUS_IMAP_PORT" not in services:
            pytest.skip("no Cyrus in this services.env (scripts/services.sh starts one since issue 14)")
        return CyrusServer(services)
    return MailServer(services)


# The tests that run against both IMAP servers (issue 14): ingest, catch-up, a crash, TLS, IDLE and folders.
both_servers = pytest.mark.parametrize("mailserver", ["dovecot", "cyrus"], indirect=True)


def make_mail(*, to: str, sender: str = "Alice Customer <alice@example.com>", subject: str = "Hello",
              body: str = "Hi there", message_id: str | None = None, in_reply_to: str | None = None,
              references: list[str] | None = None, cc: str | None = None, extra: dict[str, str] | None = None,
              charset: str = "utf-8") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(time_now())
    msg["Message-ID"] = message_id or make_msgid(domain="example.com")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for key, value in (extra or {}).items():
        msg[key] = value
    msg.set_content(body, charset=charset)
    return bytes(msg)


def time_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             message: str | Callable[[], str] = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds. ``message``
    may be a function, called then: what the test saw (a state, a document) when it gave up."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            what = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
