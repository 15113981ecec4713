from __future__ import annotations

import json

import pytest

from runtime.errors import RequestError
from kinds.imap.details import parse_details
from kinds.imap.connection import ImapSettings


def test_erxes_details_with_defaults():
    details = parse_details(json.dumps({"host": "imap.example.com", "smtpHost": "smtp.example.com",
                                        "smtpPort": 587, "mainUser": "", "user": "Support@Example.com",
                                        "password": "s3cret"}))
    assert details["smtpPort"] == "587"
    settings = ImapSettings.from_integration({**details, "inboxId": "x"})
    assert (settings.port, settings.tls, settings.starttls) == (993, True, False)
    assert settings.login == "Support@Example.com"
    assert settings.folders == ("INBOX",)
    assert "s3cret" not in repr(settings)


def test_our_optional_fields():
    details = parse_details({"host": "h", "user": "u@x", "password": "p", "mainUser": "login", "port": "143",
                             "tls": False, "starttls": True, "folders": ["INBOX", "Support"]})
    settings = ImapSettings.from_integration(details)
    assert (settings.port, settings.tls, settings.starttls, settings.login) == (143, False, True, "login")
    assert settings.folders == ("INBOX", "Support")


@pytest.mark.parametrize("raw, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"host": "h", "user": "u"}), "missing password"),
    (json.dumps({"user": "u", "password": "p"}), "missing host"),
    (json.dumps({"host": "h", "user": "u", "password": "p", "port": "x"}), "port must be a port number"),
    (json.dumps({"host": "h", "user": "u", "password": "p", "port": 0}), "between 1 and 65535"),
    (json.dumps({"host": "h", "user": "u", "password": "p", "tls": "yes"}), "tls must be true or false"),
    (json.dumps({"host": "h", "user": "u", "password": "p", "tls": True, "starttls": True}), "cannot both"),
    (json.dumps({"host": "h", "user": "u", "password": "p", "folders": []}), "folders"),
    (json.dumps({"host": "h", "user": "u", "password": "p", "port": True}), "port must be a port number"),
    (json.dumps({"host": "h", "user": "u", "password": "p", "port": 1.5}), "port must be a port number"),
    (json.dumps({"host": "h", "user": "u", "password": "p", "smtpPort": "x" * 500}), "smtpPort must be a port "),
    (json.dumps({"host": "h", "user": "u", "password": "p", "smtpHost": 5}), "smtpHost must be a string"),
    (json.dumps({"host": "h", "user": "u", "password": "p", "mainUser": ["a"]}), "mainUser must be a string"),
    (json.dumps({"host": "imap..example.com", "user": "u", "password": "p"}), "host is not a valid host name"),
    (json.dumps({"host": "h", "user": "u", "password": "p", "smtpHost": "a" * 64 + ".org"}), "smtpHost is not a"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_bad_details_say_what_is_wrong(raw, words):
    with pytest.raises(RequestError, match=words):
        parse_details(raw)


def test_update_may_leave_the_password_empty():
    assert parse_details({"host": "h", "user": "u"}, require_password=False)["password"] == ""
