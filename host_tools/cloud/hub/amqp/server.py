"""The AMQP 1.0 listener of the local hub: TLS (the hub's CA) on 5671, in the hub's event loop.

Per connection: the front answers SASL itself (wire.py says why), then a python-qpid-proton
engine (Transport + Connection + Collector, no reactor, no thread) speaks AMQP; bytes go in with
transport.push() and out, padded, with peek()/pop(). Endpoints (endpoints.py) handles the events.
"""
import asyncio
import itertools
import logging
import time

from proton import Collector, Connection, Transport

from host_tools.cloud.hub.amqp import config, endpoints, eventlog, feedback, wire

log = logging.getLogger("host_tools.cloud.hub.amqp")

HANDSHAKE_TIMEOUT = 10.0
FEEDBACK_SWEEP = 0.5
PRUNE_EVERY = 60.0      # seconds between retention passes (the first one runs at start)


class AmqpServer:
    def __init__(self, hub, eventhub, feedback_window=feedback.BATCH_SECONDS, clock=time.time,
                 feedback_lock=feedback.LOCK_SECONDS):
        self.hub = hub
        self.eventhub = eventhub
        self.feedback_window = feedback_window
        self.feedback_lock = feedback_lock    # seconds a reader holds a feedback message
        self.clock = clock              # retention's and feedback's time (tests may inject one)
        self._pruner = None
        self.server = None
        self.port = None
        self.connections = set()
        self._ids = itertools.count(1)
        self._keys = None
        self._wake_pending = False
        self._sweeper = None
        self._serving = set()   # one task per accepted connection, awaited by stop()
        self._stopping = False

    # ---- settings read by the endpoints ----------------------------------------------------
    def policy_keys(self):
        if self._keys is None:
            self._keys = config.policy_keys(self.hub.data_dir)
        return self._keys

    def reload_eventhub(self):
        try:
            self.eventhub = config.load(self.hub.data_dir)   # consumer groups added by the CLI
        except config.ConfigError as exc:
            log.warning("%s", exc)
        return self.eventhub

    def hub_name(self):
        return config.hub_name(self.eventhub)

    def feedback_changed(self):
        """A feedback message became visible again (released, abandoned, its lock expired):
        feedback links with credit get it on the next turn of the loop."""
        if not self._wake_pending:
            self._wake_pending = True
            asyncio.get_running_loop().call_soon(self._wake_all)

    def _wake_all(self):
        self._wake_pending = False
        for c in list(self.connections):
            c.wake()

    # ---- life cycle ---------------------------------------------------------------------------
    async def start(self, host, port, ssl_context):
        eventlog.prepare(self.hub.store, self.eventhub["partitions"])
        feedback.prepare(self.hub.store)
        self.server = await asyncio.start_server(self._accept, host, port, ssl=ssl_context,
                                                 ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        self.port = self.server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(self._sweep(), name="amqp feedback sweep")
        self._pruner = loop.create_task(self._prune(), name="amqp retention")
        return self.port

    async def stop(self):
        """An orderly stop: no new connection, then every task of this server cancelled and
        awaited (the connections' own clean-up runs while the store is still open)."""
        self._stopping = True
        if self.server is not None:
            self.server.close()
        for c in list(self.connections):
            c.abort()
        tasks = [t for t in (self._sweeper, self._pruner, *self._serving) if t is not None]
        for task in tasks:
            task.cancel()
        for task, outcome in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True)):
            if isinstance(outcome, Exception):
                log.error("amqp: %s ended with %s: %s", task.get_name(), type(outcome).__name__, outcome)

    def telemetry(self):
        """New telemetry is in the store: readers with credit get it now."""
        for c in list(self.connections):
            c.wake()

    async def prune_once(self):
        """Delete the events older than the retention time, one chunk per event-loop turn
        (eventlog.prune_step); returns how many."""
        cutoff = self.clock() - self.eventhub["retentionHours"] * 3600
        total = 0
        while True:
            n = eventlog.prune_step(self.hub.store, cutoff)
            if not n:
                return total
            total += n
            await asyncio.sleep(0)   # let the loop serve devices and readers between chunks

    async def _prune(self):
        while True:
            try:
                n = await self.prune_once()
                if n:
                    log.info("retention: %d events older than %g hours removed", n, self.eventhub["retentionHours"])
            except Exception:
                log.exception("retention pass failed")
            await asyncio.sleep(PRUNE_EVERY)

    async def _sweep(self):
        while True:
            await asyncio.sleep(FEEDBACK_SWEEP)
            try:
                # settled C2D messages, a chunk per loop turn: a backlog never holds the loop long
                while feedback.record_step(self.hub.store, self.clock()) == feedback.STEP_ROWS:
                    await asyncio.sleep(0)
                unlocked = feedback.unlock_expired(self.hub.store, self.clock())
                if feedback.sweep(self.hub.store, self.clock(), self.feedback_window) or unlocked:
                    for c in list(self.connections):
                        c.wake()
            except Exception:
                log.exception("feedback sweep failed")

    def _accept(self, reader, writer):
        """A connection finished its TLS handshake. A plain function, not a coroutine: asyncio
        would wrap a coroutine in a task of its own that nobody awaits, and (before Python 3.13)
        log a traceback when asyncio.run cancels it before its first step; this task is ours, and
        stop() awaits it. A handshake that ends after stop() began is refused here."""
        if self._stopping:
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer), name="amqp connection")
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        task.add_done_callback(lambda _: writer.close())    # even if cancelled before it ran

    async def _serve(self, reader, writer):
        conn = AmqpConnection(self, next(self._ids), reader, writer)
        self.connections.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass  # the hub is stopping
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as exc:
            log.info("amqp %s: connection ended: %s", conn.id, exc or type(exc).__name__)
        except Exception:
            log.exception("amqp %s: connection failed", conn.id)
        finally:
            self.connections.discard(conn)
            conn.endpoints.closed()


class AmqpConnection:
    def __init__(self, server, conn_id, reader, writer):
        self.server = server
        self.id = conn_id
        self.reader = reader
        self.writer = writer
        self.endpoints = endpoints.Endpoints(server, conn_id)
        self.endpoints.on_output = self.wake_output
        self.transport = None
        self._out = b""
        self._header_out = False
        self._closed = False

    async def _handshake(self):
        """SASL (answered here, any mechanism) then the AMQP header; returns bytes already read
        past that header."""
        header = await asyncio.wait_for(self.reader.readexactly(8), HANDSHAKE_TIMEOUT)
        if header == wire.SASL_HEADER:
            self.writer.write(wire.SASL_HEADER + wire.sasl_mechanisms())
            buf = b""
            while True:
                chunk = await asyncio.wait_for(self.reader.read(4096), HANDSHAKE_TIMEOUT)
                if not chunk:
                    raise ConnectionError("closed during SASL")
                buf += chunk
                frames, buf = wire.split_frames(buf)
                if any(len(f) > 10 and f[5] == 1 and f[8 + 2] == 0x41 for f in frames):  # sasl-init
                    break
            self.writer.write(wire.sasl_outcome_ok())
            while len(buf) < 8:
                chunk = await asyncio.wait_for(self.reader.read(4096), HANDSHAKE_TIMEOUT)
                if not chunk:
                    raise ConnectionError("closed after SASL")
                buf += chunk
            header, rest = buf[:8], buf[8:]
        else:
            rest = b""
        if header != wire.AMQP_HEADER:
            self.writer.write(wire.AMQP_HEADER)
            raise ConnectionError("not an AMQP 1.0 client")
        return header + rest

    async def run(self):
        first = await self._handshake()
        self.transport = Transport(Transport.SERVER)
        self.connection = Connection()
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.transport.bind(self.connection)
        self._push(first)
        self.process()
        while not self._closed:
            deadline = self.transport.tick(time.monotonic())
            timeout = None if not deadline else max(0.01, deadline - time.monotonic())
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except asyncio.TimeoutError:
                self.process()
                continue
            if not data:
                self.transport.close_tail()
                self.process()
                break
            self._push(data)
            self.process()
            await self.writer.drain()

    def _push(self, data):
        while data:
            room = self.transport.capacity()
            if room <= 0:
                raise ConnectionError("transport closed")
            self.transport.push(data[:room])
            data = data[room:]

    def wake(self):
        if self.transport is not None and not self._closed:
            self.endpoints.pump()
            self.process()

    def wake_output(self):
        if self.transport is not None and not self._closed:
            self.process()

    def abort(self):
        self._closed = True
        self.writer.close()

    def process(self):
        while True:
            event = self.collector.peek()
            if event is None:
                break
            try:
                self.endpoints.handle(event)
            except Exception:
                log.exception("amqp %s: handling %s failed", self.id, event.type)
            self.collector.pop()
        self._flush()

    def _flush(self):
        out = []
        while True:
            n = self.transport.pending()
            if n < 0:
                self._closed = True
                break
            if n == 0:
                break
            out.append(self.transport.peek(n))
            self.transport.pop(n)
        if not out:
            return
        data = self._out + b"".join(out)
        if not self._header_out:
            if len(data) < 8:
                self._out = data
                return
            self.writer.write(data[:8])
            data = data[8:]
            self._header_out = True
        frames, self._out = wire.split_frames(data)
        if frames:
            self.writer.write(b"".join(wire.pad(f) for f in frames))

