"""The AMQP transport of the erxes broker contract (RabbitMQ through pika's SelectConnection).

Threading: one I/O thread ("amqp-io") owns the connection and its IOLoop, and only it touches pika objects.
Other threads reach it through ``ioloop.add_callback_threadsafe`` and wait on a Future with a timeout.
Handlers run on a thread pool ("amqp-worker-N"); their reply and ack travel back the same way.

Each connection is a :class:`~runtime.broker._session.Session`; when it dies, the callers waiting on it fail
with BrokerError at once, and the I/O thread reconnects with capped, jittered exponential backoff, declaring
and registering every consumer again. Calls made while disconnected wait for a connection within their
own timeout.

RPC calls use RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``): no reply queue to declare, name or
clean up, no leak when we die, and erxes servers only ever publish to whatever ``reply_to`` says.
"""
from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time
import uuid
from typing import Any, Callable

import pika
from pika.channel import Channel
from pika.spec import BasicProperties

from runtime.broker._envelope import MISSING, encode_request, handle_plain, handle_rpc, unwrap_reply
from runtime.broker._session import DIRECT_REPLY_TO, Consumer, Op, Session
from runtime.errors import BrokerError, RpcTimeout

__all__ = ["DEFAULT_RPC_TIMEOUT", "MISSING", "AmqpBroker", "Backoff"]

logger = logging.getLogger(__name__)

DEFAULT_RPC_TIMEOUT = 30.0  # erxes's RPC_TIMEOUT default, for call() without a timeout
_REGISTER_WAIT = 10.0  # how long consume()/serve_rpc() on a live connection wait for Consume-Ok

Handler = Callable[[dict[str, Any]], Any]


class Backoff:
    """Capped exponential backoff with jitter: about ``first``, doubling up to ``cap``; ``reset()`` on success."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, *, rng: Callable[[], float] = random.random) -> None:
        self._first, self._cap, self._rng = first, cap, rng
        self._base = first

    def reset(self) -> None:
        self._base = self._first

    def next_delay(self) -> float:
        base = min(self._base, self._cap)
        self._base = min(self._base * 2, self._cap)
        return base * (0.75 + 0.25 * self._rng())


class AmqpBroker:
    """Serves and calls erxes procedures over one RabbitMQ connection; see the module docstring."""

    def __init__(self, url: str, *, prefix: str = "", prefetch: int = 32, workers: int = 16,
                 reconnect_max_delay: float = 30.0, heartbeat: int = 30,
                 sleep: Callable[[float], object] = time.sleep,
                 rpc_timeout: float = DEFAULT_RPC_TIMEOUT) -> None:
        self._params = pika.URLParameters(url)
        self._params.heartbeat = heartbeat
        self._params.client_properties = {"connection_name": "imap-runtime"}
        self._where = f"{self._params.host}:{self._params.port}"
        self._prefix = prefix
        self._prefetch = prefetch
        self._workers = workers
        self._rpc_timeout = rpc_timeout
        # A backoff in time.sleep could not be cut short by stop(); waiting on the stop event can.
        self._sleep: Callable[[float], object] | None = None if sleep is time.sleep else sleep
        self._backoff = Backoff(0.5, reconnect_max_delay)
        self.lock = threading.Lock()  # guards the fields below and every session's alive/ready/ops
        self._idle = threading.Condition(self.lock)
        self._consumers: dict[str, Consumer] = {}
        self._session: Session | None = None
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight = 0
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._outage = False  # a connection problem has been logged (I/O thread only)

    # -- public API -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def serve_rpc(self, queue: str, handler: Handler) -> None:
        """Answer RPC requests on ``queue`` + prefix with ``handler(envelope)``'s result."""
        self._add_consumer(Consumer(queue + self._prefix, handler, rpc=True))

    def consume(self, queue: str, handler: Handler) -> None:
        """Run ``handler(envelope)`` for each fire-and-forget message on ``queue`` + prefix."""
        self._add_consumer(Consumer(queue + self._prefix, handler, rpc=False))

    def start(self, timeout: float = 10.0) -> None:
        """Connect and register every consumer; on timeout stop again and raise BrokerError."""
        with self.lock:
            if self._thread is not None:
                raise BrokerError("the AMQP broker is already started")
            self._stopping.clear()
            self._executor = concurrent.futures.ThreadPoolExecutor(self._workers, thread_name_prefix="amqp-worker")
            self._thread = threading.Thread(target=self._run, name="amqp-io", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise BrokerError(f"could not connect to the AMQP broker at {self._where} within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the consumers, let running handlers finish (within the timeout), close, join."""
        deadline = time.monotonic() + timeout
        with self.lock:
            thread, executor, session = self._thread, self._executor, self._session
            if thread is None or executor is None:
                return
            self._stopping.set()
        logger.info("stopping the AMQP broker")
        if session is not None:
            session.later(session.cancel_consumers)
        with self._idle:
            drain_until = deadline - min(1.0, timeout / 4)  # keep some time for closing
            if not self._idle.wait_for(lambda: self._inflight == 0, max(0.0, drain_until - time.monotonic())):
                logger.warning("closing the AMQP connection with %d handlers still running", self._inflight)
            session = self._session
        if session is not None:
            session.later(session.close)
        thread.join(max(0.0, deadline - time.monotonic()))
        workers = list(getattr(executor, "_threads", ()))  # no public way to join them with a timeout
        executor.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive() or any(worker.is_alive() for worker in workers):
            logger.error("the AMQP broker did not stop within %.1fs", timeout)
        with self.lock:
            self._thread = self._executor = self._session = None
        self._ready.clear()

    def call(self, queue: str, data: Any, *, subdomain: str = "os", timeout: float | None = None,
             default_value: Any = MISSING) -> Any:
        """Call a remote procedure and return its reply's ``data``. RpcError on an error reply; on timeout
        ``default_value`` if given, else RpcTimeout; BrokerError if the connection fails under the call."""
        timeout = self._rpc_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        full, ms, corr = queue + self._prefix, max(0, round(timeout * 1000)), uuid.uuid4().hex
        op = Op(corr, full, encode_request(subdomain, data, timeout_ms=ms, default_value=default_value),
                BasicProperties(correlation_id=corr, reply_to=DIRECT_REPLY_TO, expiration=str(ms)), is_call=True)
        session = self._submit(op, deadline)
        try:
            envelope = op.future.result(max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            session.forget(op)
            if default_value is not MISSING:
                logger.debug("no reply from %s within %.1fs; using the default value", full, timeout)
                return default_value
            raise RpcTimeout(f"no reply from {full} within {timeout}s") from None
        return unwrap_reply(envelope, full)

    def publish(self, queue: str, data: Any, *, subdomain: str = "os", timeout: float = 10.0) -> None:
        """Send a fire-and-forget message; return once the broker confirmed it, else raise BrokerError."""
        deadline = time.monotonic() + timeout
        full = queue + self._prefix
        op_id = uuid.uuid4().hex  # also the message's id: a consumer tells a republish from a redelivery by it
        op = Op(op_id, full, encode_request(subdomain, data), BasicProperties(message_id=op_id), is_call=False)
        session = self._submit(op, deadline)
        try:
            op.future.result(max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            session.forget(op)
            raise BrokerError(f"the broker did not confirm a message to {full} within {timeout}s") from None

    # -- caller threads ---------------------------------------------------------------------------

    def _add_consumer(self, consumer: Consumer) -> None:
        with self.lock:
            if consumer.queue in self._consumers:
                raise ValueError(f"{consumer.queue} already has a consumer")
            self._consumers[consumer.queue] = consumer
            session = self._session if self._session is not None and self._session.alive else None
            live = session is not None and session.ready
        if session is None:
            return  # registered when the next connection opens
        done = threading.Event()
        session.later(session.register, consumer, done.set)
        if live and threading.current_thread() is not self._thread and not done.wait(_REGISTER_WAIT):
            logger.warning("%s: no Consume-Ok within %.0fs; it is registered again on reconnect",
                           consumer.queue, _REGISTER_WAIT)

    def _submit(self, op: Op, deadline: float) -> Session:
        """Hand an op to the live session, waiting for a connection until the deadline."""
        if threading.current_thread() is self._thread:
            raise BrokerError("the AMQP I/O thread cannot wait for its own publishes")
        while True:
            with self.lock:
                session, running = self._session, self._thread is not None and not self._stopping.is_set()
            if session is not None and session.submit(op):
                return session
            if not running:
                raise BrokerError("the AMQP broker is not running")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._ready.wait(remaining):
                raise BrokerError(f"not connected to the AMQP broker; nothing sent to {op.queue}")

    def _handle(self, session: Session, ch: Channel, consumer: Consumer, tag: int,
                props: BasicProperties, body: bytes) -> None:
        """Worker thread: run the handler, then send reply and ack back to the I/O thread."""
        reply = None
        try:
            if consumer.rpc:
                reply = handle_rpc(consumer.queue, consumer.handler, body)
                if not props.reply_to:
                    logger.debug("%s: request without reply_to; acking without a reply", consumer.queue)
            else:
                handle_plain(consumer.queue, consumer.handler, body, props.message_id)
        except Exception:  # handle_* catch handler errors; this is a bug of ours, and the ack still goes
            logger.exception("%s: unexpected error around the handler", consumer.queue)
        session.later(session.ack, ch, tag, reply, props.reply_to, props.correlation_id)

    def _handler_done(self, _future: concurrent.futures.Future[None] | None = None) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    # -- SessionOwner: called on the I/O thread ---------------------------------------------------

    def consumers(self) -> list[Consumer]:
        with self.lock:
            return list(self._consumers.values())

    def deliver(self, session: Session, ch: Channel, consumer: Consumer, tag: int,
                props: BasicProperties, body: bytes) -> None:
        assert self._executor is not None
        with self.lock:
            self._inflight += 1
        try:
            future = self._executor.submit(self._handle, session, ch, consumer, tag, props, body)
        except RuntimeError:  # shutting down: left unacked, so RabbitMQ redelivers it
            self._handler_done()
            return
        future.add_done_callback(self._handler_done)  # also runs when stop() cancels it

    def session_ready(self, session: Session) -> None:
        self._ready.set()
        self._backoff.reset()
        logger.info("%s the AMQP broker at %s", "reconnected to" if self._outage else "connected to", self._where)
        self._outage = False

    def session_failed(self, session: Session, reason: object, *, opened: bool) -> None:
        self._ready.clear()
        if self._stopping.is_set():
            logger.info("closed the AMQP connection to %s", self._where)
        elif self._outage:
            logger.debug("still no AMQP connection to %s: %s", self._where, reason)
        else:
            self._outage = True
            what = "lost the AMQP connection to" if opened else "cannot connect to the AMQP broker at"
            logger.warning("%s %s: %s; reconnecting", what, self._where, reason)

    # -- the I/O thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            session = Session(self, self._params, prefetch=self._prefetch)
            with self.lock:
                if self._stopping.is_set():
                    session.end()
                    break
                self._session = session
            try:
                session.run()
            except Exception:
                if session.alive:
                    logger.exception("the AMQP I/O loop failed")
                else:  # e.g. pika 1.4.4's AssertionError when a connection is closed during its handshake
                    logger.debug("ignoring an error raised after the connection ended", exc_info=True)
            self._ready.clear()
            session.end()
            if self._stopping.is_set():
                break
            delay = self._backoff.next_delay()
            logger.debug("reconnecting to the AMQP broker in %.2fs", delay)
            if self._sleep is None:
                self._stopping.wait(delay)
            else:
                self._sleep(delay)
        logger.debug("the AMQP I/O thread ends")
