"""``doc.data.oauth`` (kinds/imap/oauth.py parse_oauth, through kinds/imap/details.py parse_details) and the flow's pure
pieces: plain logic, no servers."""
from __future__ import annotations

import base64
import hashlib
import urllib.parse

import pytest

from runtime.errors import RequestError
from kinds.imap.details import parse_details
from kinds.imap.connection import ImapSettings
from kinds.imap.oauth import FIELDS, OAuthSettings, authorization_url, pkce_challenge, xoauth2
from kinds.imap.smtp import SmtpSettings

BASE = {"host": "imap.example.com", "user": "ann@example.com", "smtpHost": "smtp.example.com"}


def details(**oauth: object) -> dict[str, object]:
    return parse_details({**BASE, "oauth": oauth})


def test_google_preset_fills_endpoints_and_scope_and_needs_no_password():
    out = details(provider="google", clientId="id-1", clientSecret="secret-1")
    assert out["oauthAuthorizeUrl"] == "https://accounts.google.com/o/oauth2/v2/auth"
    assert out["oauthTokenUrl"] == "https://oauth2.googleapis.com/token"
    assert out["oauthScope"] == "https://mail.google.com/"
    assert (out["oauthClientId"], out["oauthClientSecret"], out["password"]) == ("id-1", "secret-1", "")
    assert "oauthRefreshToken" not in out  # comes from GET /login


def test_microsoft_preset_takes_the_tenant():
    out = details(provider="microsoft", tenant="contoso.onmicrosoft.com", clientId="id-2")
    assert out["oauthTokenUrl"] == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    assert "offline_access" in out["oauthScope"] and "SMTP.Send" in out["oauthScope"]
    assert "oauthClientSecret" not in out  # a public client (PKCE); an update without one keeps the stored one


def test_explicit_endpoints_and_a_refresh_token_reset_the_stored_access_token():
    out = details(tokenUrl="http://127.0.0.1:9/token", clientId="c", refreshToken="rt-1", scope="mail")
    assert out["oauthTokenUrl"] == "http://127.0.0.1:9/token" and out["oauthAuthorizeUrl"] is None
    assert out["oauthRefreshToken"] == "rt-1"
    assert out["oauthAccessToken"] is None and out["oauthRevoked"] is None and out["oauthRefreshAt"] is None


def test_oauth_null_goes_back_to_the_password():
    out = parse_details({**BASE, "password": "pw", "oauth": None})
    assert {k: out[k] for k in FIELDS} == {k: None for k in FIELDS}
    assert OAuthSettings.from_integration({**out, "inboxId": "i"}) is None


@pytest.mark.parametrize("oauth, words", [
    ("yes", "must be an object"),
    ({"clientId": "c"}, "tokenUrl is required"),
    ({"tokenUrl": "https://idp.example/token"}, "clientId is required"),
    ({"provider": "yahoo", "clientId": "c"}, "provider must be one of google, microsoft"),
    ({"tokenUrl": "http://idp.example/token", "clientId": "c"}, "must be an https:// URL"),
    ({"tokenUrl": "ftp://idp.example/token", "clientId": "c"}, "must be an https:// URL"),
    ({"tokenUrl": "https://u:p@idp.example/token", "clientId": "c"}, "must not carry credentials"),
    ({"tokenUrl": "https://idp.example/token", "authorizeUrl": "https:///x", "clientId": "c"}, "https:// URL"),
    ({"tokenUrl": "https://idp.example/token", "clientId": 7}, "clientId must be a string"),
    ({"tokenUrl": "https://idp.example/token", "clientId": "c", "refresh": "x"}, "unknown field 'refresh'"),
    ({"provider": "google", "tenant": "x", "clientId": "c"}, "tenant must be"),
    ({"provider": "microsoft", "tenant": "a/b", "clientId": "c"}, "tenant must be"),
    ({"tokenUrl": "https://idp.example/token", "clientId": "c\nx"}, "printable"),
])
def test_bad_oauth_details_are_refused_clearly(oauth, words):
    with pytest.raises(RequestError, match=words):
        parse_details({**BASE, "oauth": oauth})


def test_a_credential_in_a_url_is_not_echoed():
    with pytest.raises(RequestError) as caught:
        details(tokenUrl="https://me:hunter2@idp.example/token", clientId="c")
    assert "hunter2" not in str(caught.value)


def test_without_oauth_the_password_is_still_required():
    with pytest.raises(RequestError, match="missing password"):
        parse_details(BASE)


def test_settings_know_oauth_and_never_show_secrets():
    doc = {**details(tokenUrl="https://idp.example/token", clientId="c", clientSecret="cs-x", refreshToken="rt-x"),
           "inboxId": "i1"}
    imap = ImapSettings.from_integration(doc)
    smtp = SmtpSettings.from_integration(doc)
    assert imap.oauth and smtp.oauth
    assert imap.tokens is None and smtp.tokens is None  # no storage given: connect refuses instead of guessing
    settings = OAuthSettings.from_integration(doc)
    assert settings is not None and settings.sign_in == "/login?integrationId=i1"
    assert "cs-x" not in repr(settings) and "rt-x" not in repr(settings)


def test_authorization_url_carries_pkce_state_and_provider_extras():
    doc = {**details(provider="google", clientId="c"), "inboxId": "i"}
    settings = OAuthSettings.from_integration(doc)
    assert settings is not None
    url = authorization_url(settings, redirect_uri="https://x.example/login", state="s1",
                            challenge=pkce_challenge("v" * 43), login_hint="ann@example.com")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    expected = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 43).digest()).rstrip(b"=").decode()
    assert query == {"response_type": "code", "client_id": "c", "redirect_uri": "https://x.example/login",
                     "state": "s1", "code_challenge": expected, "code_challenge_method": "S256",
                     "scope": "https://mail.google.com/", "login_hint": "ann@example.com",
                     "access_type": "offline", "prompt": "consent"}


def test_xoauth2_initial_response():
    assert xoauth2("ann@example.com", "at-1") == "user=ann@example.com\x01auth=Bearer at-1\x01\x01"
