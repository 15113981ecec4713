"""The ``api`` kind's procedures (service ``api``, both transports; spec api-kind.md)."""
from __future__ import annotations

import logging
from typing import Any, Callable

from kinds.api.details import parse_details, public_details
from kinds.api.store import ApiStore
from runtime.arguments import envelope_data, integration_id, tenant
from runtime.errors import RequestError

__all__ = ["ApiProcedures"]

logger = logging.getLogger(__name__)


class ApiProcedures:
    def __init__(self, *, store: ApiStore, supervisor: Any, timeout: float = 30.0,
                 on_tenant: Callable[[str], None] = lambda subdomain: None) -> None:
        self._store = store
        self._supervisor = supervisor  # the SupervisorActor's proxy: starts and stops delivery actors
        self._timeout = timeout
        self._on_tenant = on_tenant

    def rpc_procedures(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {"createIntegration": self.create_integration, "updateIntegration": self.update_integration,
                "removeIntegrations": self.remove_integrations, "getStatus": self.get_status,
                "api_to_integrations": self.api_to_integrations}

    def create_integration(self, envelope: dict[str, Any]) -> dict[str, str]:
        data = envelope_data(envelope)
        inbox_id = integration_id(data)
        doc = data.get("doc")
        if not isinstance(doc, dict):
            raise RequestError('doc is required: {kind: "api", integrationId, data}')
        if doc.get("kind") not in (None, "api"):
            raise RequestError(f"doc.kind must be 'api', got {doc.get('kind')!r}")
        details = parse_details(doc.get("data"), creating=True)
        self._on_tenant(tenant())
        self._store.save_integration(inbox_id, details)
        logger.info("api integration %s created (callback %s)", inbox_id, details.get("callbackUrl") or "none")
        self._restart(inbox_id)
        return {"status": "success"}

    def update_integration(self, envelope: dict[str, Any]) -> dict[str, str]:
        data = envelope_data(envelope)
        inbox_id = integration_id(data)
        if self._store.get_integration(inbox_id) is None:
            raise RequestError("Integration not found.")
        doc = data.get("doc")
        if not isinstance(doc, dict):
            raise RequestError("doc is required: {data}")
        self._store.save_integration(inbox_id, parse_details(doc.get("data"), creating=False))
        logger.info("api integration %s updated", inbox_id)
        self._restart(inbox_id)
        return {"status": "success"}

    def remove_integrations(self, envelope: dict[str, Any]) -> dict[str, str]:
        inbox_id = integration_id(envelope_data(envelope))
        self._supervisor.stop_listening(inbox_id, tenant()).get(timeout=self._timeout)
        if self._store.remove_integration(inbox_id):
            logger.info("api integration %s removed with its pending deliveries", inbox_id)
        return {"status": "success"}

    def get_status(self, envelope: dict[str, Any]) -> dict[str, Any]:
        doc = self._store.get_integration(integration_id(envelope_data(envelope)))
        if doc is None:
            return {"status": "healthy"}
        out: dict[str, Any] = {"status": doc.get("healthStatus", "healthy")}
        if doc.get("error"):
            out["error"] = doc["error"]
        return out

    def api_to_integrations(self, envelope: dict[str, Any]) -> Any:
        data = envelope_data(envelope)
        if data.get("action") != "getDetails":
            return None  # inbox stores a reply itself only when we answer with no data
        doc = self._store.get_integration(integration_id(data))
        return public_details(doc) if doc else None

    def _restart(self, inbox_id: str) -> None:
        self._supervisor.restart(inbox_id, tenant(), unless_current=True).get(timeout=self._timeout)

