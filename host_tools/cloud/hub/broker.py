"""amqtt (pinned 0.12.1) as the MQTT/TLS transport of the local IoT Hub.

amqtt gives us the TLS listener, CONNECT decoding and packet encoders. IoT Hub is not a pub/sub
broker (devices never talk to each other), so every packet of a connected device goes to the hub:
  - HubProtocolHandler replaces amqtt's reader loop: strict framing and decoding (packets.py), one
    packet at a time in arrival order; QoS 1 is answered only after the hub has handled (and
    stored) the message, and PUBACKs go out in the order of the PUBLISHes, while the reader
    goes on with the next packets (telemetry waiting for its group commit does not stop the
    device's next PUBLISH from joining the next batch); QoS 2, oversize, a malformed packet or
    a topic the device may not use close the connection. This also sidesteps the stock broker ending a client's loop on
    `$iothub/...` publishes.
  - HubBroker replaces session set-up: authenticate BEFORE touching any existing session (the stock
    broker lets a rejected CONNECT take over a connected client id), one fresh amqtt Session per
    connection (durable state lives in the hub's SQLite store); the TLS handshake, the CONNECT and
    every later packet once begun are bounded by the connect timeout; silence is bounded by
    1.5 x keep-alive capped at 1767 s.
These override private amqtt methods: keep amqtt pinned exactly.
"""
import asyncio
import logging
from contextlib import suppress
from functools import partial

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.pingresp import PingRespPacket
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket

from host_tools.cloud.hub import packets

log = logging.getLogger("host_tools.cloud.hub")

MAX_PACKET = 256 * 1024          # IoT Hub's D2C limit, topic + payload
_READ_LIMIT = MAX_PACKET + 4096  # no single read of a packet part may be larger than this


ACKS_PENDING = 256               # QoS 1 PUBLISHes of one connection waiting for their commit


async def _done():
    return None


class _Done:
    """An awaitable that is already done (a PUBLISH handled without a commit to wait for)."""

    def __await__(self):
        return _done().__await__()


_DONE = _Done()


class PacketTooLarge(Exception):
    pass


class _LimitedReader(StreamReaderAdapter):
    """Refuses to buffer a packet that announces more than the hub accepts."""

    async def read(self, n=-1):
        if n < 0 or n > _READ_LIMIT:
            raise PacketTooLarge("packet part of %d bytes" % n)
        return await super().read(n)


class HubProtocolHandler(BrokerProtocolHandler):
    """One device connection after CONNACK. Replaces amqtt's reader loop: packets are framed and
    decoded strictly (packets.py) and handled one at a time, in the order they arrived; a QoS 1
    PUBLISH whose handling ends in a commit (telemetry) queues its PUBACK behind that commit and
    the reader goes on; the PUBACKs go out in the order of the PUBLISHes. Any malformed packet
    closes the connection."""
    conn = None             # the hub's Connection, set before start()
    idle_timeout = None     # seconds of silence that end the connection (keep-alive x 1.5, capped)
    packet_timeout = 10.0   # a packet that has begun must arrive whole within this
    _acks = None            # asyncio.Queue of (packet id or None, awaitable) for the acker
    _acker = None

    async def _reader_loop(self):
        self._reader_ready.set()
        reason = "connection closed by the device"
        self._acks = asyncio.Queue(ACKS_PENDING)
        self._acker = asyncio.ensure_future(self._ack_in_order())
        try:
            while not self.conn.closing:
                framed = await packets.read_packet(self.reader, self.idle_timeout, self.packet_timeout,
                                                   MAX_PACKET + 8)
                if framed is None:
                    break
                await self._dispatch(packets.decode(*framed))
        except packets.IdleTimeout:
            # nothing received for 1.5 x keep-alive: the hub drops the connection like IoT Hub does
            reason = "keep-alive timeout (%ss of silence)" % self.idle_timeout
        except (packets.PacketError, PacketTooLarge) as exc:
            reason = "malformed packet: %s" % exc
        except asyncio.CancelledError:
            reason = "stopped"
        except (ConnectionError, OSError) as exc:
            reason = "connection lost: %r" % exc
        except Exception as exc:  # never let one device's bytes hurt the hub
            log.exception("%s: reader failed", self.conn.device_id)
            reason = "internal error: %r" % exc
        finally:
            self._acker.cancel()
            self.conn.close(reason)
            self._reader_stopped.set()

    async def _ack_in_order(self):
        """PUBACK each QoS 1 PUBLISH once its handling is durable, in the order they came."""
        conn = self.conn
        try:
            while True:
                packet_id, durable = await self._acks.get()
                try:
                    await durable
                except Exception as exc:    # not stored: no PUBACK for it or anything after it
                    log.error("%s: telemetry not stored: %s", conn.device_id, exc)
                    conn.close("internal error")
                    return
                if conn.closing:
                    return
                await self._send_packet(PubackPacket.build(packet_id))
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError) as exc:
            conn.close("connection lost: %r" % exc)

    async def _dispatch(self, p):
        conn = self.conn
        if isinstance(p, packets.Publish):
            await self._on_publish(p)
        elif p.type == packets.PUBACK:
            conn.on_puback(p.packet_id)
        elif p.type == packets.SUBSCRIBE:
            codes = conn.on_subscribe(p.filters)
            if codes is not None:
                await self.mqtt_acknowledge_subscription(p.packet_id, codes)
                conn.after_subscribe()
        elif p.type == packets.UNSUBSCRIBE:
            conn.on_unsubscribe(p.filters)
            await self.mqtt_acknowledge_unsubscription(p.packet_id)
        elif p.type == packets.PINGREQ:
            await self._send_packet(PingRespPacket.build())
        elif p.type == packets.DISCONNECT:
            conn.close("DISCONNECT")

    async def _on_publish(self, p):
        conn = self.conn
        if p.qos not in (0, 1):
            return conn.close("QoS %s publish" % p.qos)
        if len(p.topic.encode()) + len(p.payload) > MAX_PACKET:
            return conn.close("message larger than 256 KB")
        if conn.hub.faults.take("drop"):
            return conn.close("injected fault: drop")
        handled = await conn.on_publish(p.topic, p.payload, retain=p.retain)
        if handled is False:
            return
        if handled is True:
            if p.qos != 1 or conn.closing:
                return
            handled = _DONE
        if p.qos == 1:
            await self._acks.put((p.packet_id, handled))    # waits while ACKS_PENDING are queued

    async def send_publish(self, topic, data, packet_id, dup=False):
        """A QoS 1 PUBLISH to the device; the Connection tracks its PUBACK."""
        await self._send_packet(PublishPacket.build(topic, bytes(data), packet_id, dup, 1, False))


class HubBroker(Broker):
    def __init__(self, hub, config, connect_timeout=10.0, max_idle=packets.MAX_IDLE_SECONDS):
        super().__init__(config)
        self.hub = hub
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle

    async def _create_server_instance(self, listener_name, listener_type, address, port, ssl_context):
        # amqtt leaves the TLS handshake to asyncio's 60 s default: bound it like the CONNECT
        if listener_type != ListenerType.TCP:
            return await super()._create_server_instance(listener_name, listener_type, address, port,
                                                         ssl_context)
        return await asyncio.start_server(
            partial(self.stream_connected, listener_name=listener_name), address, port,
            reuse_address=True, ssl=ssl_context,
            ssl_handshake_timeout=self.connect_timeout if ssl_context is not None else None)

    def port(self, listener="default"):
        return self._servers[listener].instance.sockets[0].getsockname()[1]

    async def stream_connected(self, reader, writer, listener_name):
        adapter = StreamWriterAdapter(writer)
        try:
            await self._client_connected(listener_name, _LimitedReader(reader), adapter)
        except Exception as exc:  # a hostile client must never hurt the listener
            log.info("connection dropped: %r", exc)
        finally:
            await close_writer(adapter)

    async def _initialize_client_session(self, reader, writer, remote_address, remote_port):
        try:
            return await asyncio.wait_for(
                HubProtocolHandler.init_from_connect(reader, writer, self.plugins_manager),
                self.connect_timeout)
        except asyncio.TimeoutError:
            raise AMQTTError("no CONNECT within %ss" % self.connect_timeout) from None
        except (AMQTTError, MQTTError, NoDataError):
            raise
        except Exception as exc:  # garbage instead of a CONNECT
            raise AMQTTError("bad CONNECT: %r" % exc) from None

    async def _handle_client_session(self, reader, writer, session, handler, server, listener_name):
        conn = self.hub.authenticate(session)
        session.parent = 0
        if isinstance(conn, int):
            handler.attach(session, reader, writer)
            # 5 not authorized; 3 server unavailable when injected
            await handler._send_packet(ConnackPacket.build(0, conn))
            return
        handler.attach(session, reader, writer)
        handler.conn = conn
        handler.idle_timeout = packets.server_idle_timeout(session.keep_alive, self.max_idle)
        handler.packet_timeout = self.connect_timeout
        conn.handler = handler
        await self.hub.attach(conn)  # takes over from an older connection of the same device
        session.parent = 1 if conn.session_present else 0
        self._sessions[session.client_id] = (session, handler)
        session.transitions.connect()
        try:
            await handler.mqtt_connack_authorize(True)
            await handler.start()
            conn.started()
            disconnect = asyncio.ensure_future(handler.wait_disconnect())
            closing = asyncio.ensure_future(conn.closed_event.wait())
            await asyncio.wait([disconnect, closing], return_when=asyncio.FIRST_COMPLETED)
            for t in (disconnect, closing):
                t.cancel()
        finally:
            await self.hub.detach(conn)
            # drop the connection at once, as IoT Hub does; waiting for a TLS close handshake
            # would let a peer that never answers it hold the handler for the SSL shutdown timeout
            abort(writer)
            try:
                await asyncio.wait_for(handler.stop(), 5)
            except (asyncio.TimeoutError, Exception):
                pass
            with suppress(Exception):
                session.transitions.disconnect()
            if self._sessions.get(session.client_id, (None, None))[1] is handler:
                del self._sessions[session.client_id]
            conn.finished.set()


def abort(adapter):
    transport = getattr(getattr(adapter, "_writer", None), "transport", None)
    if transport is not None:
        transport.abort()


async def close_writer(adapter):
    try:
        await asyncio.wait_for(adapter.close(), 2)
    except Exception:
        abort(adapter)
