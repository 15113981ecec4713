"""The calls the runtime makes into erxes (contract section 4), over one broker transport.

Everything that leaves for core/contacts or inbox goes through :class:`ErxesClient`, so the transport (AMQP now,
HTTP later) and the service names (``core`` for 2.x, ``contacts`` for 1.x) are decided in one place.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Protocol

from runtime.errors import BrokerError, RequestError
from runtime.mail.sanitize import outward_html

__all__ = ["ErxesClient", "RpcTransport"]

logger = logging.getLogger(__name__)


class RpcTransport(Protocol):
    def call(self, queue: str, data: Any, *, subdomain: str = "os", timeout: float | None = None) -> Any: ...

    def publish(self, queue: str, data: Any, *, subdomain: str = "os", timeout: float = 10.0) -> None: ...


class ErxesClient:
    def __init__(self, transport: RpcTransport, *, customer_service: str = "core", timeout: float = 30.0,
                 send_idempotency_keys: bool = False) -> None:
        self._transport = transport
        self._customers = customer_service
        self._timeout = timeout
        # Only our standalone emulation of inbox reads it; erxes's inbox would ignore it, but we keep its payload
        # exactly as erxes's plugin sends it.
        self._send_keys = send_idempotency_keys

    def find_customer(self, subdomain: str, email: str) -> dict[str, Any] | None:
        found = self._transport.call(f"{self._customers}:customers.findOne", {"customerPrimaryEmail": email},
                                     subdomain=subdomain, timeout=self._timeout)
        return found if isinstance(found, dict) and found.get("_id") else None

    def create_customer(self, subdomain: str, inbox_id: str, email: str, first_name: str = "",
                        last_name: str = "") -> dict[str, Any]:
        data: dict[str, Any] = {"integrationId": inbox_id, "primaryEmail": email}
        if first_name:
            data["firstName"] = first_name
        if last_name:
            data["lastName"] = last_name
        created = self._transport.call(f"{self._customers}:customers.createCustomer", data, subdomain=subdomain,
                                       timeout=self._timeout)
        if not isinstance(created, dict) or not created.get("_id"):
            raise BrokerError(f"{self._customers}:customers.createCustomer returned no customer id")
        return created

    def find_customer_by(self, subdomain: str, selector: dict[str, str]) -> dict[str, Any] | None:
        """``customers.findOne`` by any of erxes's selectors (``customerPrimaryEmail``, ``customerPrimaryPhone``,
        ``customerCode``)."""
        found = self._transport.call(f"{self._customers}:customers.findOne", selector, subdomain=subdomain,
                                     timeout=self._timeout)
        return found if isinstance(found, dict) and found.get("_id") else None

    def create_customer_doc(self, subdomain: str, inbox_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """``customers.createCustomer`` with ``doc`` (``primaryEmail``, ``primaryPhone`` or ``code``, names)."""
        created = self._transport.call(f"{self._customers}:customers.createCustomer",
                                       {"integrationId": inbox_id, **doc}, subdomain=subdomain,
                                       timeout=self._timeout)
        if not isinstance(created, dict) or not created.get("_id"):
            raise BrokerError(f"{self._customers}:customers.createCustomer returned no customer id")
        return created

    def create_or_update_conversation(self, subdomain: str, *, inbox_id: str, customer_id: str,
                                      created_at: dt.datetime, content: str, conversation_id: str | None = None,
                                      idempotency_key: str | None = None) -> str:
        payload: dict[str, Any] = {"integrationId": inbox_id, "customerId": customer_id,
                                   "createdAt": created_at.isoformat(), "content": content}
        if conversation_id:
            payload["conversationId"] = conversation_id
        if self._send_keys and idempotency_key:
            payload["idempotencyKey"] = idempotency_key
        reply = self._transport.call(
            "inbox:integrations.receive",
            {"action": "create-or-update-conversation", "payload": json.dumps(payload)},
            subdomain=subdomain, timeout=self._timeout)
        if not isinstance(reply, dict) or not reply.get("_id"):
            raise BrokerError("inbox:integrations.receive returned no conversation id")
        return str(reply["_id"])

    def message_inserted(self, subdomain: str, *, message_id: str, content: str, conversation_id: str) -> None:
        """``content`` is a mail's HTML: inbox passes it to the UI's subscription and to mobile notifications, so it
        leaves sanitised (``runtime.mail.sanitize.outward_html``; no attachment route, so ``cid:`` images show their
        alt)."""
        data = {"_id": message_id, "content": outward_html(content), "conversationId": conversation_id}
        self._transport.publish("inbox:conversationClientMessageInserted", data, subdomain=subdomain)

    def change_status(self, subdomain: str, conversation_id: str, status: str) -> None:
        if status not in ("closed", "new"):
            raise RequestError(f"unknown conversation status {status!r}")
        self._transport.call("inbox:conversations.changeStatus", {"id": conversation_id, "status": status},
                             subdomain=subdomain, timeout=self._timeout)
