"""amqtt (pinned 0.12.1) as the MQTT/TLS transport of the local IoT Hub.

amqtt gives us packet codecs, TLS listeners and the per-connection protocol handler. IoT Hub is not
a pub/sub broker (devices never talk to each other), so this subclass routes every PUBLISH and
SUBSCRIBE of a device to the hub itself:
  - HubProtocolHandler.handle_publish answers QoS 1 only after the hub has handled (and stored)
    the message, closes the connection on QoS 2, oversize or a topic the device may not use. This
    also sidesteps the stock broker ending a client's loop on `$iothub/...` publishes.
  - HubProtocolHandler.handle_subscribe checks each filter against the device's own topics.
  - HubBroker replaces session set-up: authenticate BEFORE touching any existing session (the stock
    broker lets a rejected CONNECT take over a connected client id), one fresh amqtt Session per
    connection (durable state lives in the hub's SQLite store), CONNECT timeout, keep-alive x 1.5.
These override private amqtt methods: keep amqtt pinned exactly.
"""
import asyncio
import logging
import math
from contextlib import suppress

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket

log = logging.getLogger("host_tools.cloud.hub")

MAX_PACKET = 256 * 1024          # IoT Hub's D2C limit, topic + payload
_READ_LIMIT = MAX_PACKET + 4096  # no single read of a packet part may be larger than this


class PacketTooLarge(Exception):
    pass


class _LimitedReader(StreamReaderAdapter):
    """Refuses to buffer a packet that announces more than the hub accepts."""

    async def read(self, n=-1):
        if n < 0 or n > _READ_LIMIT:
            raise PacketTooLarge("packet part of %d bytes" % n)
        return await super().read(n)


class HubProtocolHandler(BrokerProtocolHandler):
    conn = None  # the hub's Connection, set before start()

    async def handle_publish(self, packet):
        conn = self.conn
        topic = packet.topic_name or ""
        data = packet.data or b""
        if packet.qos not in (0, 1):
            return conn.close("QoS %s publish" % packet.qos)
        if len(topic.encode()) + len(data) > MAX_PACKET:
            return conn.close("message larger than 256 KB")
        if not await conn.on_publish(topic, bytes(data)):
            return
        if packet.qos == 1 and not conn.closing:
            await self._send_packet(PubackPacket.build(packet.variable_header.packet_id))

    async def handle_subscribe(self, subscribe):
        packet_id = subscribe.variable_header.packet_id
        codes = self.conn.on_subscribe(subscribe.payload.topics)
        if codes is None:
            return
        await self.mqtt_acknowledge_subscription(packet_id, codes)
        self.conn.after_subscribe()

    async def handle_unsubscribe(self, unsubscribe):
        self.conn.on_unsubscribe(unsubscribe.payload.topics)
        await self.mqtt_acknowledge_unsubscription(unsubscribe.variable_header.packet_id)

    async def publish_until_acked(self, topic, data):
        """QoS 1 publish that waits for the PUBACK as long as the connection lives (amqtt's own
        mqtt_publish gives up after 5 s and then ignores a late PUBACK). Cancelled on close."""
        packet_id = self.session.next_packet_id
        waiter = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            await self._send_packet(PublishPacket.build(topic, bytes(data), packet_id, False, 1, False))
            await waiter
        finally:
            self._puback_waiters.pop(packet_id, None)

    def handle_read_timeout(self):
        # nothing received for 1.5 x keep-alive: the hub drops the connection like IoT Hub does
        if self.conn is not None:
            self.conn.close("keep-alive timeout")


class HubBroker(Broker):
    def __init__(self, hub, config, connect_timeout=10.0):
        super().__init__(config)
        self.hub = hub
        self.connect_timeout = connect_timeout

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
        if conn is None:
            handler.attach(session, reader, writer)
            await handler.mqtt_connack_authorize(False)  # CONNACK 5, not authorized
            return
        if session.keep_alive > 0:
            session.keep_alive = math.ceil(session.keep_alive * 1.5)
        handler.attach(session, reader, writer)
        handler.conn = conn
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
