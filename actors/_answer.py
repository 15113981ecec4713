"""How pipeline actors answer a mailbox."""
from __future__ import annotations

import logging
from typing import Any

import pykka
from pymongo.errors import PyMongoError

from runtime.errors import BrokerError, RpcError, StorageError

logger = logging.getLogger(__name__)


def answer(mailbox: Any, method: str, *args: Any) -> None:
    """Tell a mailbox ``method(*args)``; a mailbox that stopped meanwhile re-fetches the mail anyway."""
    try:
        getattr(mailbox, method)(*args)
    except pykka.ActorDeadError:
        logger.debug("Mailbox gone before %s%r", method, args)


def is_transient(exc: BaseException) -> bool:
    """An outage of our own infrastructure (MongoDB, the broker): retry without counting it against the mail.

    An error *reply* from a remote procedure (RpcError) is about the mail and counts."""
    return isinstance(exc, (PyMongoError, StorageError, BrokerError)) and not isinstance(exc, RpcError)
