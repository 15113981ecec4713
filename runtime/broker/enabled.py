"""``ENABLED_SERVICES_JSON`` as erxes honours it, in front of either transport (AMQP or HTTP).

A call to a service that is not enabled is never sent: the caller's ``defaultValue`` comes back, else
BrokerError "<svc> service is not enabled"; a plain message to it is dropped. Without the gate an AMQP call to a
service that is not deployed would wait out the whole RPC timeout for a consumer that never comes.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from runtime.broker._envelope import MISSING
from runtime.errors import BrokerError

__all__ = ["EnabledServices"]

logger = logging.getLogger(__name__)


class EnabledServices:
    def __init__(self, transport: Any, service_enabled: Callable[[str], bool]) -> None:
        self._transport = transport
        self._enabled = service_enabled

    def call(self, queue: str, data: Any, *, default_value: Any = MISSING, **kwargs: Any) -> Any:
        service = queue.partition(":")[0]
        if not self._enabled(service):
            if default_value is not MISSING:
                return default_value
            raise BrokerError(f"{service} service is not enabled")
        if default_value is not MISSING:
            kwargs["default_value"] = default_value
        return self._transport.call(queue, data, **kwargs)

    def publish(self, queue: str, data: Any, **kwargs: Any) -> None:
        service = queue.partition(":")[0]
        if not self._enabled(service):
            logger.debug("not sending %s: the %s service is not enabled", queue, service)
            return
        self._transport.publish(queue, data, **kwargs)
