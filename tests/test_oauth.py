"""OAuth2 (XOAUTH2) mailboxes against the real servers: Dovecot with its oauth2 passdb, which asks the local
authorization server of tests/oauthserver.py (on OAUTH_PORT, where scripts/mailserver.sh points it) whether a token is
valid; MongoDB with sealing; the runtime in this process, driven over the broker and HTTP as erxes would.

Covered: an XOAUTH2 mailbox ingests and replies (IMAP and SMTP submission both sign in with XOAUTH2); refresh before
expiry and on a refused token; a rotated refresh token saved sealed, and spent once by racing threads; a revoked
one gives unHealthy and no retry storm; an unreachable endpoint is transient; GET /login end to end."""
from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest
from bson import json_util
from pymongo.errors import AutoReconnect

from runtime import fence
from runtime.errors import AuthenticationFailed, MailboxError, StorageError
from kinds.imap.details import parse_details
from kinds.imap.connection import ImapSettings, connect
from kinds.imap.oauth_refresh import NotSignedIn, TokenRevoked, Tokens
from runtime.sealing import PREFIX, Sealer, new_key
from runtime.storage import Storage
from tests.conftest import MailServer, make_mail, wait_for
from tests.e2e import Caller, free_port, runtime_config
from tests.oauthserver import OAuthServer
from tests.secretscan import register_secret

ADMIN = {"user": base64.b64encode(json.dumps({"_id": "admin-1", "username": "admin", "isOwner": True}).encode()
                                   ).decode()}  # an erxes owner: GET /login needs one (issue 12 item 10)


@pytest.fixture
def oauth(services: dict[str, str]) -> Iterator[OAuthServer]:
    assert services.get("OAUTH_PORT"), "services were started before OAUTH_PORT existed: stop and start them again"
    server = OAuthServer(int(services["OAUTH_PORT"]), on_secret=register_secret).start()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def tests_fence(services: dict[str, str], mongo_url: str) -> Iterator[None]:
    """The process's outbound fence as the tests' configuration has it (OUTBOUND_ALLOW_LOOPBACK_HTTP on: the
    authorization server is on 127.0.0.1), for the tests that use the token module without a runtime."""
    previous = fence.install(fence.Fence.from_config(runtime_config(services, mongo_url=mongo_url, prefix="")))
    yield
    fence.install(previous)


@pytest.fixture
def ca_cert(services: dict[str, str]) -> str:
    return Path(services["CA_CERT"]).read_text()


@pytest.fixture
def storage(mongo_url: str) -> Iterator[Storage]:
    store = Storage(mongo_url, sealer=Sealer([new_key()]))
    store.ensure_indexes()
    yield store
    store.close()


def oauth_details(mailserver: MailServer, oauth: OAuthServer, user: str, ca_cert: str, **extra: Any) -> dict[str, Any]:
    details = mailserver.details(user, "", caCert=ca_cert)
    del details["password"]
    details["oauth"] = {"tokenUrl": oauth.url("/token"), "authorizeUrl": oauth.url("/authorize"),
                        "clientId": oauth.client_id, "clientSecret": oauth.client_secret, **extra}
    return details


def state_of(db: Any, inbox_id: str) -> dict[str, Any]:
    return db.imap_integrations.find_one({"inboxId": inbox_id}) or {}


def raw_dump(db: Any) -> str:
    return "".join(json_util.dumps(list(db[name].find({}))) for name in db.list_collection_names())


def assert_sealed(db: Any, inbox_id: str, *fields: str) -> None:
    raw = state_of(db, inbox_id)
    for name in fields:
        assert str(raw.get(name, "")).startswith(PREFIX), f"{name} is not sealed"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """One GET, redirects not followed: (status, Location, body)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}", headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Location") or "", response.read().decode()
    finally:
        conn.close()


def ingests(db: Any, mailserver: MailServer, user: str, password: str, inbox_id: str, subject: str,
            sender: str = "Alice <alice@example.com>") -> dict[str, Any]:
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", sender=sender, subject=subject))
    return wait_for(lambda: db.imap_messages.find_one({"inboxIntegrationId": inbox_id, "subject": subject,
                                                       "ingestState": "done"}),
                    timeout=15, message=f"{subject!r} to be ingested")


# -- the token module against the real authorization server and MongoDB ------------------------------------------
class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def saved(storage: Storage, oauth: OAuthServer, user: str, inbox_id: str = "inbox-t", **extra: Any) -> None:
    storage.save_integration(inbox_id, parse_details({
        "host": "127.0.0.1", "user": f"{user}@localhost", "mainUser": user, **extra,
        "oauth": {"tokenUrl": oauth.url("/token"), "clientId": oauth.client_id, "clientSecret": oauth.client_secret,
                  "refreshToken": oauth.issue(user)}}))


def test_access_token_is_kept_until_shortly_before_expiry_then_refreshed(storage, oauth, db):
    saved(storage, oauth, "ann")
    clock = Clock()
    tokens = Tokens("inbox-t", storage, timeout=5, clock=clock)
    first = tokens.access_token()
    assert tokens.access_token() == first and oauth.refresh_requests["ann"] == 1
    clock.now += 3600 - 299  # inside the 5-minute margin before the hour's expiry
    second = tokens.access_token()
    assert second != first and oauth.refresh_requests["ann"] == 2
    assert storage.get_integration("inbox-t")["oauthAccessToken"] == second
    assert_sealed(db, "inbox-t", "oauthAccessToken", "oauthRefreshToken", "oauthClientSecret")
    assert not any(secret in raw_dump(db) for secret in oauth.secrets())


def test_rotated_refresh_token_is_saved_sealed_and_spent_once_by_racing_threads(storage, oauth, db):
    oauth.rotate = True
    saved(storage, oauth, "bob")
    original = storage.get_integration("inbox-t")["oauthRefreshToken"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = set(pool.map(lambda _: Tokens("inbox-t", storage, timeout=5).access_token(), range(8)))
    assert len(got) == 1 and oauth.refresh_requests["bob"] == 1  # one refresh; the others read it from MongoDB
    current = storage.get_integration("inbox-t")["oauthRefreshToken"]
    assert current != original and current == oauth.refresh_token_of("bob")
    assert_sealed(db, "inbox-t", "oauthRefreshToken")
    assert current not in raw_dump(db)
    clock = Clock()
    clock.now += 4000  # the next refresh works only with the rotated token
    assert Tokens("inbox-t", storage, timeout=5, clock=clock).access_token() not in got


class OutageOnce:
    """The real storage, whose first token write fails as if MongoDB were down."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def update_integration_fields(self, inbox_id: str, fields: dict[str, Any]) -> bool:
        if not self.failed:
            self.failed = True
            raise AutoReconnect("MongoDB is down")
        return self._storage.update_integration_fields(inbox_id, fields)


def test_rotated_refresh_token_survives_a_mongodb_outage(storage, oauth):
    oauth.rotate = True
    saved(storage, oauth, "eve")
    flaky = OutageOnce(storage)
    with pytest.raises(AutoReconnect):
        Tokens("inbox-t", flaky, timeout=5).access_token()  # refreshed (and rotated) at the endpoint, not stored
    token = Tokens("inbox-t", flaky, timeout=5).access_token()  # stores what it kept, asks nobody
    assert oauth.refresh_requests["eve"] == 1 and token in oauth.access_tokens_of("eve")
    assert storage.get_integration("inbox-t")["oauthRefreshToken"] == oauth.refresh_token_of("eve")


def test_revoked_refresh_token_is_recorded_and_never_asked_again(storage, oauth):
    saved(storage, oauth, "cid")
    oauth.revoke("cid")
    with pytest.raises(TokenRevoked, match=r"the refresh token was revoked; sign in again at /login\?integrationId="):
        Tokens("inbox-t", storage, timeout=5).access_token()
    with pytest.raises(TokenRevoked):
        Tokens("inbox-t", storage, timeout=5).access_token()
    assert oauth.refresh_requests["cid"] == 1


def test_endpoint_trouble_is_transient_and_a_wrong_client_is_not(storage, oauth):
    saved(storage, oauth, "dan")
    oauth.fail_with = 503
    with pytest.raises(MailboxError) as caught:
        Tokens("inbox-t", storage, timeout=5).access_token()
    assert not isinstance(caught.value, AuthenticationFailed) and "HTTP 503" in str(caught.value)
    oauth.fail_with = None
    storage.update_integration_fields("inbox-t", {"oauthTokenUrl": f"http://127.0.0.1:{free_port()}/token"})
    with pytest.raises(MailboxError, match="unreachable") as caught:
        Tokens("inbox-t", storage, timeout=5).access_token()
    assert not isinstance(caught.value, AuthenticationFailed)
    storage.update_integration_fields("inbox-t", {"oauthTokenUrl": oauth.url("/token"),
                                                  "oauthClientSecret": "wrong-secret"})
    with pytest.raises(AuthenticationFailed, match="invalid_client") as caught:
        Tokens("inbox-t", storage, timeout=5).access_token()
    assert not isinstance(caught.value, TokenRevoked) and "wrong-secret" not in str(caught.value)
    assert storage.get_integration("inbox-t").get("oauthRevoked") is None
    storage.update_integration_fields("inbox-t", {"oauthRefreshToken": None})
    with pytest.raises(NotSignedIn, match="sign in at /login"):
        Tokens("inbox-t", storage, timeout=5).access_token()


def test_a_loopback_token_endpoint_is_refused_without_the_loopback_setting(storage, oauth, services, mongo_url):
    saved(storage, oauth, "fay")
    production = fence.Fence.from_config(runtime_config(services, mongo_url=mongo_url, prefix="",
                                                        outbound_allow_loopback_http=False))
    with pytest.raises(AuthenticationFailed, match=r"must be https:// \(http:// only to a loopback address, with "
                                                   r"OUTBOUND_ALLOW_LOOPBACK_HTTP, for tests\)") as refused:
        Tokens("inbox-t", storage, timeout=5, fence=production).access_token()
    assert not isinstance(refused.value, TokenRevoked)
    fence.install(production)  # the process's fence, which the mailboxes' token sources use
    settings = ImapSettings.from_integration(storage.get_integration("inbox-t"), 5, storage=storage)
    with pytest.raises(AuthenticationFailed, match="OUTBOUND_ALLOW_LOOPBACK_HTTP"):
        connect(settings)
    assert sum(oauth.token_requests.values()) == 0  # the endpoint never heard of it
    assert storage.get_integration("inbox-t").get("oauthRevoked") is None


def test_imap_login_refused_for_an_expired_token_refreshes_once_and_succeeds(storage, oauth, mailserver):
    user, _password = mailserver.add_user("ox")
    saved(storage, oauth, user, port=mailserver.imap_port, tls=False)
    settings = ImapSettings.from_integration(storage.get_integration("inbox-t"), 10, storage=storage)
    connect(settings).logout()
    assert oauth.refresh_requests[user] == 1
    oauth.expire_access_tokens(user)  # the provider ended it early; our copy still looks fresh
    connect(settings).logout()
    assert oauth.refresh_requests[user] == 2


# -- end to end: the runtime ---------------------------------------------------------------------------------------
def test_xoauth2_mailbox_ingests_and_replies_and_shows_no_secret(runtime, caller: Caller, mailserver, db, oauth,
                                                                 ca_cert, services):
    user, password = mailserver.add_user("ox")
    customer, customer_password = mailserver.add_user("cust")
    caller.create_integration("ox-1", oauth_details(mailserver, oauth, user, ca_cert, refreshToken=oauth.issue(user)))
    wait_for(lambda: state_of(db, "ox-1").get("state") == "idle", timeout=15, message="the mailbox to IDLE")
    doc = ingests(db, mailserver, user, password, "ox-1", "Question", sender=f"Cus <{customer}@localhost>")

    caller.call("imapMessage.create", {"integrationId": "ox-1", "conversationId": doc["inboxConversationId"],
                                       "from": f"{user}@localhost", "to": [f"{customer}@localhost"],
                                       "subject": "Re: Question", "body": "<p>Answer</p>"})
    with mailserver.client(customer, customer_password) as client:
        client.select_folder("INBOX", readonly=True)
        wait_for(lambda: client.search(["SUBJECT", "Re: Question"]) or client.noop() and False, timeout=15,
                 message="the reply in the customer's INBOX")
    log = Path(services["MAIL_DIR"], "log", "dovecot.log").read_text()
    assert f"imap-login: Info: Login: user=<{user}>, method=XOAUTH2" in log
    assert f"submission-login: Info: Login: user=<{user}>, method=XOAUTH2" in log

    assert_sealed(db, "ox-1", "oauthAccessToken", "oauthRefreshToken", "oauthClientSecret")
    details = caller.call("api_to_integrations", {"action": "getDetails", "integrationId": "ox-1"})
    graphql = get_graphql(runtime.web_port)
    seen = [raw_dump(db), json.dumps(details), graphql]  # logs: tests/secretscan.py, which knows these secrets
    leaked = [s for s in oauth.secrets() if any(s in text for text in seen)]
    assert leaked == [] and "ox-1" in graphql


def get_graphql(port: int) -> str:
    body = json.dumps({"query": "{ imapGetIntegrations { inboxId user password } }"})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("POST", "/graphql", body=body, headers={"Content-Type": "application/json", **ADMIN})
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_expired_token_is_refreshed_and_a_rotated_one_stored(runtime, caller, mailserver, db, oauth, ca_cert):
    oauth.rotate = True
    user, password = mailserver.add_user("ox")
    caller.create_integration("ox-2", oauth_details(mailserver, oauth, user, ca_cert, refreshToken=oauth.issue(user)))
    wait_for(lambda: state_of(db, "ox-2").get("state") == "idle", timeout=15, message="the mailbox to IDLE")
    oauth.expire_access_tokens(user)
    runtime.supervisor.restart("ox-2").get(timeout=15)  # a reconnect: Dovecot refuses the stored access token
    wait_for(lambda: oauth.refresh_requests[user] == 2 and state_of(db, "ox-2").get("state") == "idle", timeout=15,
             message="a refresh and IDLE again")
    assert runtime.storage.get_integration("ox-2")["oauthRefreshToken"] == oauth.refresh_token_of(user)
    assert_sealed(db, "ox-2", "oauthRefreshToken", "oauthAccessToken")
    ingests(db, mailserver, user, password, "ox-2", "After the refresh")


def test_revoked_token_gives_unhealthy_and_no_retry_storm(runtime, caller, mailserver, db, oauth, ca_cert):
    user, _password = mailserver.add_user("ox")
    caller.create_integration("ox-3", oauth_details(mailserver, oauth, user, ca_cert, refreshToken=oauth.issue(user)))
    wait_for(lambda: state_of(db, "ox-3").get("state") == "idle", timeout=15, message="the mailbox to IDLE")
    oauth.revoke(user)
    runtime.supervisor.restart("ox-3").get(timeout=15)
    wait_for(lambda: state_of(db, "ox-3").get("healthStatus") == "unHealthy", timeout=15, message="unHealthy")
    status = caller.call("getStatus", {"integrationId": "ox-3"})
    assert status["status"] == "unHealthy"
    assert "the refresh token was revoked; sign in again at /login?integrationId=ox-3" in status["error"]
    with pytest.raises(AssertionError):  # a few seconds in which a retrying mailbox would ask again
        wait_for(lambda: oauth.refresh_requests[user] > 2, timeout=4, message="another refresh")
    assert oauth.refresh_requests[user] == 2  # the first sign-in, then the one that found it revoked


def test_login_route_signs_in_stores_tokens_and_connects(runtime, caller, mailserver, db, oauth, ca_cert):
    user, password = mailserver.add_user("ox")
    caller.create_integration("ox-4", oauth_details(mailserver, oauth, user, ca_cert))
    wait_for(lambda: state_of(db, "ox-4").get("healthStatus") == "unHealthy", timeout=15, message="not signed in")
    assert "not signed in yet: sign in at /login?integrationId=ox-4" in state_of(db, "ox-4")["error"]
    base = f"http://127.0.0.1:{runtime.web_port}/login"

    assert get(f"{base}?integrationId=ox-4")[0] == 401
    assert get(f"{base}?integrationId=nope", ADMIN)[0] == 404
    status, to_provider, _ = get(f"{base}?integrationId=ox-4", ADMIN)
    assert status == 302 and to_provider.startswith(oauth.url("/authorize?"))
    asked = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(to_provider).query))
    assert asked["redirect_uri"] == base and asked["login_hint"] == user
    assert asked["code_challenge_method"] == "S256" and len(asked["state"]) >= 43
    [started] = db.imap_oauth_states.find()  # the verifier is sealed with its tenant bound in, like every secret
    assert runtime.storage.sealer.unseal(started["verifier"], context="oauthVerifier:os:ox-4")
    with pytest.raises(StorageError):
        runtime.storage.sealer.unseal(started["verifier"], context="oauthVerifier:ox-4")

    status, back, _ = get(to_provider)  # the provider signs the user in and sends the browser back
    assert status == 302 and back.startswith(f"{base}?code=")
    status, _, page = get(back)
    assert status == 200 and "is connected" in page and user in page
    wait_for(lambda: state_of(db, "ox-4").get("state") == "idle", timeout=15, message="the mailbox to IDLE")
    assert_sealed(db, "ox-4", "oauthAccessToken", "oauthRefreshToken", "oauthClientSecret")
    assert runtime.storage.get_integration("ox-4")["oauthRefreshToken"] == oauth.refresh_token_of(user)
    ingests(db, mailserver, user, password, "ox-4", "Signed in")

    status, _, page = get(back)  # a state works once
    assert status == 400 and "already used or expired" in page
    assert get(f"{base}?state=forged&code=x")[0] == 400
    assert db.imap_oauth_states.count_documents({}) == 0
    assert not any(secret in raw_dump(db) for secret in oauth.secrets())


def test_login_route_refuses_a_password_integration_and_reports_a_refusal(runtime, caller, mailserver, db, oauth,
                                                                           ca_cert):
    user, password = mailserver.add_user("pw")
    caller.create_integration("pw-1", mailserver.details(user, password))
    status, _, page = get(f"http://127.0.0.1:{runtime.web_port}/login?integrationId=pw-1", ADMIN)
    assert status == 400 and "signs in with a password" in page
    caller.create_integration("ox-5", oauth_details(mailserver, oauth, user, ca_cert))
    status, to_provider, _ = get(f"http://127.0.0.1:{runtime.web_port}/login?integrationId=ox-5", ADMIN)
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(to_provider).query))["state"]
    status, _, page = get(f"http://127.0.0.1:{runtime.web_port}/login?state={state}&error=access_denied"
                          f"&error_description=The+user+said+no")
    assert status == 400 and "access_denied: The user said no" in page
