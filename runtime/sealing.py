"""Secrets at rest: mailbox passwords and webhook secrets are stored sealed (encrypted and authenticated).

Pure logic on ``cryptography``'s AES-256-GCM (:class:`~cryptography.hazmat.primitives.ciphers.aead.AESGCM`).

Keys come from the ``secret_keys`` setting (``SECRET_KEYS``): a comma-separated list of keys, each 32 random
bytes in URL-safe base64 (``python -m runtime.admin new-key`` makes one). The first key seals; every key unseals,
so a key is rotated by putting the new one first, running ``python -m runtime.admin reseal`` and then dropping
the old one.

A sealed value is a string::

    sealed:v1:<key id>:<URL-safe base64 of 12-byte nonce + ciphertext + 16-byte tag>

``key id`` is the first 8 hex digits of the key's SHA-256 (it names the key, it reveals nothing of it). The
associated data binds a value to its field, tenant and integration (``password:<tenant>:<inboxId>``, the tenant
being ``os`` or the organisation's subdomain with ``VERSION=saas``), so a sealed value copied into another field,
integration or tenant database does not unseal. Values sealed before the tenant was bound in
(``password:<inboxId>``) still open: :meth:`Sealer.unseal_with` tries the current context first, then the legacy
one, and says which opened it, so storage reseals such a value at once. A value without the prefix is plain text
(written by erxes's own plugin, or before sealing existed): it is read as it is, and ``reseal`` seals it.

With no keys configured the runtime seals with :data:`DEV_KEY`, a published key that protects nothing, and says so
with a WARNING at start-up: for development only (``NODE_ENV=production`` refuses to start without keys).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runtime.errors import ConfigError, StorageError

__all__ = ["DEV_KEY", "PREFIX", "Sealer", "is_sealed", "new_key", "parse_keys"]

logger = logging.getLogger(__name__)

PREFIX = "sealed:v1:"
NONCE_BYTES = 12
_KEY = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]=?")  # exactly 32 bytes in URL-safe base64
# Public, therefore no secret: used only when SECRET_KEYS is empty, with a start-up WARNING.
DEV_KEY = "ZGV2ZWxvcG1lbnQta2V5LW5vdC1hLXNlY3JldC0hISE="  # base64 of b"development-key-not-a-secret-!!!"


def new_key() -> str:
    """A fresh random key in the form ``secret_keys`` takes."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _decode_key(setting: str, text: str) -> bytes:
    text = text.strip()
    raw = base64.urlsafe_b64decode(text.rstrip("=") + "=") if _KEY.fullmatch(text) else b""
    if len(raw) != 32:
        raise ConfigError(setting, "each key must be 32 random bytes in URL-safe base64 (44 characters; "
                                   "python -m runtime.admin new-key makes one)")
    return raw


def parse_keys(setting: str, raw: object) -> tuple[str, ...]:
    """The ``secret_keys`` setting: a comma-separated string (or a JSON list) of keys, checked; () when empty."""
    if isinstance(raw, str):
        items = [k.strip() for k in raw.split(",")]
    elif isinstance(raw, (list, tuple)) and all(isinstance(k, str) for k in raw):
        items = [k.strip() for k in raw]
    else:
        raise ConfigError(setting, "must be a comma-separated string of keys")
    keys = tuple(k for k in items if k)
    for key in keys:
        _decode_key(setting, key)
    return keys


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class Sealer:
    """Seals with the first key, unseals with any. Thread-safe (no mutable state)."""

    def __init__(self, keys: Iterable[str]) -> None:
        decoded = [_decode_key("secret_keys", k) for k in keys]
        if not decoded:
            raise ConfigError("secret_keys", "at least one key is needed")
        self._ciphers = {_key_id(k): AESGCM(k) for k in decoded}
        self.current_id = _key_id(decoded[0])
        self.is_dev = decoded[0] == base64.urlsafe_b64decode(DEV_KEY)

    @classmethod
    def from_setting(cls, keys: Iterable[str]) -> Sealer:
        """The sealer of the ``secret_keys`` setting; the development key (with a WARNING) when it is empty."""
        keys = list(keys)
        if not keys:
            logger.warning("SECRET_KEYS is not set: mailbox passwords and webhook secrets are sealed with the public "
                           "development key, which protects nothing; set SECRET_KEYS (python -m runtime.admin "
                           "new-key) in any real deployment, then run python -m runtime.admin reseal")
            keys = [DEV_KEY]
        return cls(keys)

    def seal(self, plain: str, *, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current_id].encrypt(nonce, plain.encode("utf-8"), context.encode("utf-8"))
        token = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{PREFIX}{self.current_id}:{token}"

    def unseal(self, value: str, *, context: str) -> str:
        """The plain text of ``value``; a value that is not sealed is returned as it is (a legacy plain record)."""
        return self.unseal_with(value, contexts=(context,))[0]

    def unseal_with(self, value: str, *, contexts: Sequence[str]) -> tuple[str, int]:
        """The plain text of ``value`` and the index of the first of ``contexts`` (associated data) that opens it:
        0 is the current one, a later one a legacy form whose value should be sealed again. A plain value is
        returned as it is, with 0."""
        if not is_sealed(value):
            return value, 0
        what = contexts[0].partition(":")[0]
        key_id, _, token = value[len(PREFIX):].partition(":")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise StorageError(f"the {what} is sealed with key {key_id}, which is not among SECRET_KEYS")
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise StorageError(f"the {what} does not unseal (altered, or moved from another record)") from exc
        for index, context in enumerate(contexts):
            try:
                plain = cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode("utf-8"))
                return plain.decode("utf-8"), index
            except (InvalidTag, ValueError):
                continue
        raise StorageError(f"the {what} does not unseal (altered, or moved from another record)")

    def is_current(self, value: object) -> bool:
        """Sealed with the first key (nothing for ``reseal`` to do)."""
        return is_sealed(value) and str(value)[len(PREFIX):].partition(":")[0] == self.current_id
