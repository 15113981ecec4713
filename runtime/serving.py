"""Serving procedures on the broker: the broker itself (with the erxes emulation's consumers in standalone mode),
how calls into erxes travel, and each handler bound to its envelope's tenant and timed. Shared by the runtime's
process (app/process.py) and ``python -m runtime.emulator``."""
from __future__ import annotations

import logging
from typing import Any, Callable

import redis

from runtime import metrics
from runtime.broker.amqp import AmqpBroker
from runtime.broker.enabled import EnabledServices
from runtime.broker.http import HttpRpcClient
from runtime.config import Config
from runtime.detect import MARKER_QUEUE
from runtime.registry import ServiceDirectory
from runtime.standalone import Standalone
from runtime.tenants import Tenants, with_tenant

__all__ = ["MeteredAmqpBroker", "erxes_transport", "per_tenant", "serve", "start_broker"]

logger = logging.getLogger(__name__)


def start_broker(config: Config, tenants: Tenants, *, marker: bool = False) -> AmqpBroker:
    """The broker, with the emulation's consumers when ``config.standalone``. ``marker``: also consume
    runtime/detect.py's marker queue (first, on the same connection), so other runtimes tell this emulation from
    erxes; ``python -m runtime.emulator`` (erxes's stand-in) leaves it out."""
    broker = MeteredAmqpBroker(config.rabbitmq_url, prefix=config.message_broker_prefix,
                               rpc_timeout=config.rpc_timeout)
    if config.standalone:
        if marker:
            broker.consume(MARKER_QUEUE, lambda envelope: None)
        emulation = Standalone(tenants.facade(), customer_service=config.customer_service)
        tenants.on_new_tenant(Standalone.ensure_indexes)
        serve(broker, per_tenant(tenants, emulation.rpc_procedures()),
              per_tenant(tenants, emulation.plain_procedures()))
        logger.info("Standalone mode: serving the core/contacts and inbox procedures we call")
    broker.start()
    return broker


class MeteredAmqpBroker(AmqpBroker):
    """The AMQP broker, counting every connection after the first into ``imap_broker_reconnects_total``."""

    _opened = 0

    def session_ready(self, session: Any) -> None:
        if self._opened:
            metrics.BROKER_RECONNECTS.inc()
        self._opened += 1
        super().session_ready(session)


def erxes_transport(config: Config, broker: AmqpBroker, redis_conn: redis.Redis) -> Any:
    """How calls into erxes travel. ``http``: RPCs over HTTP to the address in Redis, plain messages still over
    AMQP (as erxes sends them). In standalone mode the emulation is on our AMQP consumers, so calls go there."""
    if config.rpc_transport == "http" and config.standalone:
        logger.info("Standalone mode: calls go to the emulation over AMQP (RPC_TRANSPORT=http applies with "
                    "STANDALONE=false)")
    if config.rpc_transport != "http" or config.standalone:
        return EnabledServices(metrics.TimedTransport(broker, "amqp"), config.service_enabled)
    client = HttpRpcClient(ServiceDirectory(redis_conn), publisher=broker, timeout=config.rpc_timeout)
    logger.info("RPCs to erxes go over HTTP (addresses from Redis service:<name>); messages over AMQP")
    return EnabledServices(metrics.TimedTransport(client, "http"), config.service_enabled)


def per_tenant(tenants: Tenants, table: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Each handler runs bound to its envelope's tenant."""
    return {name: with_tenant(tenants, handler) for name, handler in table.items()}


def serve(broker: AmqpBroker, rpc: dict[str, Callable[..., Any]], plain: dict[str, Callable[..., Any]]) -> list[str]:
    for name, handler in rpc.items():
        broker.serve_rpc(name, metrics.timed(name, "amqp", handler))
    for name, handler in plain.items():
        broker.consume(name, handler)
    return [*rpc, *plain]
