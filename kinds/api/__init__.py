"""The ``api`` kind: a generic channel over signed webhooks (``../shared/spec/api-kind.md``; Chatwoot's API
channel is the anchor). Any system that can send and receive HTTP becomes an erxes inbox integration.

- procedures ``api:createIntegration``, ``updateIntegration``, ``removeIntegrations``, ``getStatus``,
  ``api_to_integrations`` (kinds/api/procedures.py), ``service:api`` in Redis (HTTP: ``<address>/api/rpc/...``);
- ``POST /api/receive?integrationId=`` (kinds/api/web.py, kinds/api/ingest.py): signed, exactly once per
  ``messageId``;
- GraphQL ``apiSendMessage``, ``apiConversationDetail`` (kinds/api/graphql.py);
- the listener: a delivery actor per integration (kinds/api/actor.py, kinds/api/delivery.py) posting staff replies
  to the callback URL, signed, retried with backoff, from an outbox in MongoDB.

It uses the runtime's shared pieces only (storage, the erxes client, the fence, sanitize, metrics, tenants),
nothing of the IMAP kind. Settings: ``api_retry_base_seconds``, ``api_retry_max_seconds``,
``api_retry_for_seconds``, ``api_delivery_timeout_seconds``, ``api_delivery_poll_seconds`` (runtime/config.py).
"""
from __future__ import annotations

from typing import Any

from kinds.api.actor import DeliveryActor
from kinds.api.delivery import Retry
from kinds.api.graphql import fields
from kinds.api.ingest import ApiIngest
from kinds.api.procedures import ApiProcedures
from kinds.api.store import ApiStore
from kinds.api.web import RECEIVE, routes
from runtime.kinds import Kind, Registry, Services

__all__ = ["ApiKind"]


class ApiKind(Kind):
    name = "api"
    label = "API"

    def setup(self, registry: Registry, services: Services) -> None:
        config, tenants = services.config, services.tenants
        store = ApiStore(services.storage)
        if tenants is not None:
            tenants.on_new_tenant(ApiStore.ensure_indexes)
        procedures = ApiProcedures(store=store, supervisor=services.supervisor, timeout=services.timeout,
                                   on_tenant=tenants.remember if tenants is not None else lambda s: None)
        for name, handler in procedures.rpc_procedures().items():
            registry.add_procedure(name, handler)
        registry.add_routes([RECEIVE], routes(store=store, ingest=ApiIngest(store=store, erxes=services.erxes)))
        queries, mutations = fields(store)
        for name, graphene_field in queries.items():
            registry.add_query(name, graphene_field)
        for name, graphene_field in mutations.items():
            registry.add_mutation(name, graphene_field)
        retry, poll, fence = Retry.from_config(config), float(getattr(config, "api_delivery_poll_seconds", 1.0)), \
            services.fence

        def start_delivery(doc: dict[str, Any], *, supervisor: Any, generation: int, subdomain: str = "os") -> Any:
            return DeliveryActor.start(doc, supervisor=supervisor, generation=generation, subdomain=subdomain,
                                       store=store, fence=fence, retry=retry, poll=poll)

        registry.add_listener(start_delivery, integrations=store)
