"""How pipeline actors answer a mailbox."""
from __future__ import annotations

import logging
from typing import Any

import pykka

logger = logging.getLogger(__name__)


def answer(mailbox: Any, method: str, *args: Any) -> None:
    """Tell a mailbox ``method(*args)``; a mailbox that stopped meanwhile re-fetches the mail anyway."""
    try:
        getattr(mailbox, method)(*args)
    except pykka.ActorDeadError:
        logger.debug("Mailbox gone before %s%r", method, args)
