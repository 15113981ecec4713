"""One AMQP connection and everything that lives and dies with it (used by :mod:`runtime.broker.amqp`).

A :class:`Session` owns a pika SelectConnection and its IOLoop. Its methods run on the I/O thread, except the
ones marked thread-safe, which only take the owner's lock and hand work to the loop. When the connection dies,
the owner calls :meth:`Session.end`: every op still waiting fails with BrokerError, and work handed to the
dead loop afterwards is never run (RabbitMQ redelivers what was not acked).

Two channels. "consume": manual-ack consumers under ``prefetch``; RPC replies are published on it just
before the ack. "publish": publisher confirms, plus the direct reply-to consumer (``amq.rabbitmq.reply-to``)
that receives the replies to our own calls. A declaration the broker refuses (406) costs only the publish
channel, which is reopened in place; losing the consume channel closes the connection (the owner reconnects).
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import pika
from pika.adapters.select_connection import IOLoop
from pika.channel import Channel
from pika.spec import Basic, BasicProperties

from runtime.broker._envelope import decode_envelope
from runtime.errors import BrokerError, RpcError

__all__ = ["DIRECT_REPLY_TO", "Consumer", "Op", "Session", "SessionOwner"]

logger = logging.getLogger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

@dataclass(frozen=True)
class Consumer:
    queue: str  # the real queue name, suffix applied
    handler: Callable[[dict[str, Any]], Any]
    rpc: bool


@dataclass(eq=False)
class Op:
    """A publish or call some thread waits for. The future is settled on the I/O thread only: with None
    (publish confirmed) or the reply envelope (call), or with a BrokerError."""

    key: str  # the correlation id of a call
    queue: str
    body: bytes
    properties: BasicProperties
    is_call: bool
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    sent: bool = False  # handed to the publish channel


class SessionOwner(Protocol):
    """What a session needs from the broker that owns it."""

    lock: threading.Lock

    def consumers(self) -> list[Consumer]: ...
    def deliver(self, session: Session, ch: Channel, consumer: Consumer, tag: int,
                props: BasicProperties, body: bytes) -> None: ...
    def session_ready(self, session: Session) -> None: ...
    def session_failed(self, session: Session, reason: object, *, opened: bool) -> None: ...


class Session:
    """``alive``, ``ready`` and ``ops`` are guarded by ``owner.lock``; the rest belongs to the I/O thread."""

    def __init__(self, owner: SessionOwner, params: pika.URLParameters, *, prefetch: int) -> None:
        self.owner = owner
        self.params = params
        self.prefetch = prefetch
        self.ioloop = IOLoop()
        self.connection: pika.SelectConnection | None = None
        self.alive = True
        self.ready = False
        self.ops: dict[str, Op] = {}
        self.consume_ch: Channel | None = None
        self.publish_ch: Channel | None = None
        self.backlog: list[Op] = []  # waiting for the publish channel to (re)open
        self.declared: dict[str, list[Op] | None] = {}  # None: declared; a list: ops waiting for Declare-Ok
        self.confirms: dict[int, Op] = {}
        self.published = 0
        self.registered: set[str] = set()
        self.consumer_tags: list[str] = []
        self.failure: str | None = None  # why we closed the connection ourselves, for the owner's log

    # -- thread-safe ------------------------------------------------------------------------------

    def later(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the I/O thread, guarded; never, if this session's loop is gone."""
        self.ioloop.add_callback_threadsafe(self._cb(fn, *args))

    def submit(self, op: Op) -> bool:
        """Hand an op to this session if it is connected and ready; False otherwise."""
        with self.owner.lock:
            if not (self.alive and self.ready):
                return False
            self.ops[op.key] = op
        self.later(self._send, op)
        return True

    def forget(self, op: Op) -> None:
        with self.owner.lock:
            self.ops.pop(op.key, None)  # a late reply or confirm is then dropped

    # -- lifecycle (I/O thread) -------------------------------------------------------------------

    def run(self) -> None:
        """Connect and run the loop until the connection is closed or lost."""
        self.connection = pika.SelectConnection(
            self.params, on_open_callback=self._cb(self._on_open),
            on_open_error_callback=self._cb(self._on_open_error), on_close_callback=self._cb(self._on_closed),
            custom_ioloop=self.ioloop)
        self.ioloop.start()

    def end(self) -> None:
        """After the loop returned: fail what is still waiting and release the loop."""
        with self.owner.lock:
            self.alive = False
            ops = list(self.ops.values())
            self.ops.clear()
        for op in ops:
            if not op.future.done():
                op.future.set_exception(BrokerError(f"the connection to the AMQP broker was lost ({op.queue})"))
        self.ioloop.close()

    def close(self, failure: str | None = None) -> None:
        """Close the connection; ``failure`` says why, when it is a problem and not a stop."""
        self.failure = self.failure or failure
        conn = self.connection
        if conn is None or conn.is_closed:
            self.ioloop.stop()
        elif not conn.is_closing:
            conn.close()

    def cancel_consumers(self) -> None:
        ch = self.consume_ch
        if ch is not None and ch.is_open:
            for tag in self.consumer_tags:
                if tag in ch.consumer_tags:
                    ch.basic_cancel(tag)

    def _cb(self, fn: Callable[..., None], *args: Any) -> Callable[..., None]:
        """Wrap an I/O-thread callback: a bug in it closes the connection instead of killing the loop."""
        @functools.wraps(fn)
        def guarded(*more: Any) -> None:
            try:
                fn(*args, *more)
            except Exception:
                logger.exception("unexpected error in the AMQP callback %s", fn.__name__)
                self.close(f"unexpected error in {fn.__name__}")
        return guarded

    def _on_open(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._cb(self._on_consume_channel_open))

    def _on_open_error(self, _conn: pika.SelectConnection, error: BaseException) -> None:
        self._dead()
        self.owner.session_failed(self, error, opened=False)

    def _on_closed(self, _conn: pika.SelectConnection, reason: BaseException) -> None:
        self._dead()
        self.owner.session_failed(self, self.failure or reason, opened=True)

    def _dead(self) -> None:
        with self.owner.lock:
            self.alive = False  # submit() refuses from now on; end() fails what is waiting
        self.ioloop.stop()

    def _closing(self) -> bool:
        return self.connection is None or self.connection.is_closing or self.connection.is_closed

    # -- consume channel --------------------------------------------------------------------------

    def _on_consume_channel_open(self, ch: Channel) -> None:
        ch.add_on_close_callback(self._cb(self._on_consume_channel_closed))
        ch.add_on_cancel_callback(self._cb(self._on_cancelled_by_broker))
        ch.basic_qos(prefetch_count=self.prefetch, callback=self._cb(self._on_qos_ok, ch))

    def _on_qos_ok(self, ch: Channel, _frame: Any) -> None:
        self.consume_ch = ch
        self._open_publish_channel()

    def _on_consume_channel_closed(self, _ch: Channel, reason: BaseException) -> None:
        if not self._closing():
            self.close(f"the broker closed the consume channel: {reason}")

    def _on_cancelled_by_broker(self, frame: Any) -> None:
        self.close(f"the broker cancelled consumer {frame.method.consumer_tag} (queue deleted?)")

    def register(self, consumer: Consumer, done: Callable[[], None]) -> None:
        ch = self.consume_ch
        if ch is None or not ch.is_open or consumer.queue in self.registered:
            done()  # not set up yet (the set-up will register it) or registered already
            return
        self.registered.add(consumer.queue)
        ch.queue_declare(consumer.queue, durable=True,
                         callback=self._cb(self._on_consumer_declared, ch, consumer, done))

    def _on_consumer_declared(self, ch: Channel, consumer: Consumer, done: Callable[[], None], _frame: Any) -> None:
        on_message = self._cb(self._on_delivery, ch, consumer)
        self.consumer_tags.append(ch.basic_consume(consumer.queue, on_message, callback=lambda _frame: done()))
        logger.debug("consuming %s", consumer.queue)

    def _on_delivery(self, ch: Channel, consumer: Consumer, _ch: Channel, method: Basic.Deliver,
                     props: BasicProperties, body: bytes) -> None:
        self.owner.deliver(self, ch, consumer, method.delivery_tag, props, body)

    def ack(self, ch: Channel, tag: int, reply: bytes | None, reply_to: str | None,
            correlation_id: str | None) -> None:
        """Publish the reply (if any) to ``reply_to``, then ack; dropped if the channel is gone."""
        if not self.alive or ch is not self.consume_ch or not ch.is_open:
            logger.debug("dropping the ack of delivery %s: its channel is gone and RabbitMQ redelivers it", tag)
            return
        if reply is not None and reply_to:
            ch.basic_publish("", reply_to, reply, BasicProperties(correlation_id=correlation_id))
        ch.basic_ack(tag)

    # -- publish channel --------------------------------------------------------------------------

    def _open_publish_channel(self) -> None:
        assert self.connection is not None
        self.connection.channel(on_open_callback=self._cb(self._on_publish_channel_open))

    def _on_publish_channel_open(self, ch: Channel) -> None:
        ch.add_on_close_callback(self._cb(self._on_publish_channel_closed))
        ch.confirm_delivery(self._cb(self._on_confirm, ch), callback=self._cb(self._on_select_ok, ch))

    def _on_select_ok(self, ch: Channel, _frame: Any) -> None:
        ch.basic_consume(DIRECT_REPLY_TO, self._cb(self._on_reply), auto_ack=True,
                         callback=self._cb(self._on_publish_channel_ready, ch))

    def _on_publish_channel_ready(self, ch: Channel, _frame: Any) -> None:
        self.publish_ch = ch
        backlog, self.backlog = self.backlog, []
        for op in backlog:
            self._send(op)
        if self.ready:
            return  # reopened after an error
        consumers = self.owner.consumers()
        remaining = len(consumers)

        def one_done() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                self._set_ready()

        if not consumers:
            self._set_ready()
        for consumer in consumers:
            self.register(consumer, one_done)

    def _set_ready(self) -> None:
        with self.owner.lock:
            if not self.alive:
                return
            self.ready = True
        self.owner.session_ready(self)

    def _on_publish_channel_closed(self, _ch: Channel, reason: BaseException) -> None:
        if self._closing():
            return  # the whole session ends; end() fails what is waiting
        logger.warning("the broker closed the AMQP publish channel: %s; reopening it", reason)
        self.publish_ch = None
        self.declared.clear()
        self.confirms.clear()
        self.published = 0
        with self.owner.lock:
            failed = [op for op in self.ops.values() if op.sent]
        for op in failed:
            self._settle(op, exc=BrokerError(f"{op.queue}: the broker closed the channel: {reason}"))
        if self.ready:
            self._open_publish_channel()
        else:
            self.close(f"the broker closed the publish channel while connecting: {reason}")

    def _send(self, op: Op) -> None:
        with self.owner.lock:
            if op.key not in self.ops:
                return  # the caller gave up
        ch = self.publish_ch
        if ch is None:
            self.backlog.append(op)
            return
        op.sent = True
        if op.queue not in self.declared:  # first use on this channel: declare it as erxes does
            self.declared[op.queue] = [op]
            ch.queue_declare(op.queue, durable=True, callback=self._cb(self._on_target_declared, ch, op.queue))
        elif (waiting := self.declared[op.queue]) is not None:
            waiting.append(op)
        else:
            self._publish(ch, op)

    def _on_target_declared(self, ch: Channel, queue: str, _frame: Any) -> None:
        if ch is not self.publish_ch:
            return
        waiting, self.declared[queue] = self.declared.get(queue), None
        for op in waiting or ():
            self._publish(ch, op)

    def _publish(self, ch: Channel, op: Op) -> None:
        with self.owner.lock:
            if op.key not in self.ops:
                return
        ch.basic_publish("", op.queue, op.body, op.properties)
        self.published += 1
        self.confirms[self.published] = op

    def _on_confirm(self, ch: Channel, frame: Any) -> None:
        if ch is not self.publish_ch:
            return
        method = frame.method
        tags = [t for t in self.confirms if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        for tag in tags:
            op = self.confirms.pop(tag, None)
            if op is None:
                continue
            if isinstance(method, Basic.Nack):
                self._settle(op, exc=BrokerError(f"the broker refused a message to {op.queue}"))
            elif not op.is_call:
                self._settle(op, None)  # a call stays open until its reply

    def _on_reply(self, _ch: Channel, _method: Basic.Deliver, props: BasicProperties, body: bytes) -> None:
        with self.owner.lock:
            op = self.ops.get(props.correlation_id or "")
        if op is None or not op.is_call:
            logger.debug("dropping a late or unknown reply %s", props.correlation_id)
            return
        try:
            envelope = decode_envelope(body)
        except ValueError as exc:
            self._settle(op, exc=RpcError(f"{op.queue} replied with something that is not JSON: {exc}"))
            return
        self._settle(op, envelope)

    def _settle(self, op: Op, result: Any = None, *, exc: BaseException | None = None) -> None:
        with self.owner.lock:
            self.ops.pop(op.key, None)
        if op.future.done():
            return
        if exc is not None:
            op.future.set_exception(exc)
        else:
            op.future.set_result(result)
