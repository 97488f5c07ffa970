"""Strict MQTT 3.1.1 framing and decoding of what a connected device may send.

amqtt's own reader discards a packet it cannot decode and reads on from the middle of it, so bytes
inside one packet's payload could be taken for the next packet. IoT Hub closes the connection on
any malformed packet; so does the hub: `read_packet` frames one packet (a remaining length of more
than 4 bytes, a packet that does not arrive whole within `packet_timeout`: PacketError) and
`decode` checks it against the spec, consuming exactly its bytes.
"""
import asyncio
import struct

PUBLISH, PUBACK, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 3, 4, 8, 10, 12, 14
MAX_IDLE_SECONDS = 1767  # IoT Hub's cap on the server-side keep-alive timeout (Azure LB idle timeout)


class PacketError(Exception):
    """A malformed packet, or one a connected device may not send: the connection is closed."""


class IdleTimeout(Exception):
    """Nothing at all arrived within the idle timeout (keep-alive)."""


class Publish:
    __slots__ = ("topic", "packet_id", "qos", "retain", "dup", "payload")

    def __init__(self, topic, packet_id, qos, retain, dup, payload):
        self.topic, self.packet_id, self.qos = topic, packet_id, qos
        self.retain, self.dup, self.payload = retain, dup, payload


class Packet:
    """PUBACK (packet_id), SUBSCRIBE (packet_id, filters [(filter, qos)]),
    UNSUBSCRIBE (packet_id, filters [filter]), PINGREQ, DISCONNECT."""
    __slots__ = ("type", "packet_id", "filters")

    def __init__(self, type_, packet_id=None, filters=()):
        self.type, self.packet_id, self.filters = type_, packet_id, filters


async def read_packet(reader, idle_timeout, packet_timeout, max_length):
    """-> (packet type, flags, body) or None at EOF. The first byte may take idle_timeout (None:
    forever); from then on the whole packet must arrive within packet_timeout."""
    try:
        first = await asyncio.wait_for(reader.read(1), idle_timeout)
    except asyncio.TimeoutError:
        raise IdleTimeout() from None
    except asyncio.IncompleteReadError:
        return None
    if not first:
        return None
    try:
        return await asyncio.wait_for(_rest(reader, first[0], max_length), packet_timeout)
    except asyncio.TimeoutError:
        raise PacketError("packet not complete within %ss" % packet_timeout) from None
    except asyncio.IncompleteReadError:
        raise PacketError("connection closed inside a packet") from None


async def _rest(reader, byte1, max_length):
    length, multiplier = 0, 1
    for i in range(4):
        b = (await reader.read(1))[0]
        length += (b & 0x7F) * multiplier
        if not b & 0x80:
            break
        multiplier *= 128
    else:
        raise PacketError("remaining length longer than 4 bytes")
    if length > max_length:
        raise PacketError("packet of %d bytes is over the limit" % length)
    body = await reader.read(length) if length else b""
    return byte1 >> 4, byte1 & 0x0F, body


class _Cursor:
    def __init__(self, body):
        self.body, self.pos = body, 0

    def take(self, n):
        if self.pos + n > len(self.body):
            raise PacketError("packet shorter than its fields")
        out = self.body[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self):
        return struct.unpack("!H", self.take(2))[0]

    def packet_id(self):
        pid = self.u16()
        if pid == 0:
            raise PacketError("packet id 0")
        return pid

    def string(self):
        raw = self.take(self.u16())
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PacketError("string is not UTF-8") from None
        if "\x00" in text:
            raise PacketError("string contains U+0000")
        return text

    def left(self):
        return len(self.body) - self.pos


def decode(ptype, flags, body):
    """One framed packet of a connected device -> Publish or Packet; PacketError when malformed
    or of a type a device may not send once connected (CONNECT again, server packets, QoS 2 flow)."""
    c = _Cursor(body)
    if ptype == PUBLISH:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise PacketError("PUBLISH with QoS 3")
        topic = c.string()
        if not topic or "+" in topic or "#" in topic:
            raise PacketError("PUBLISH topic %r is empty or has a wildcard" % topic[:64])
        pid = c.packet_id() if qos else None
        return Publish(topic, pid, qos, bool(flags & 1), bool(flags & 8), bytes(body[c.pos:]))
    if ptype == PUBACK:
        _flags(flags, 0, "PUBACK")
        pid = c.packet_id()
        _end(c, "PUBACK")
        return Packet(PUBACK, pid)
    if ptype in (SUBSCRIBE, UNSUBSCRIBE):
        name = "SUBSCRIBE" if ptype == SUBSCRIBE else "UNSUBSCRIBE"
        _flags(flags, 2, name)
        pid = c.packet_id()
        filters = []
        while c.left():
            f = c.string()
            if not f:
                raise PacketError("%s with an empty topic filter" % name)
            if ptype == SUBSCRIBE:
                q = c.take(1)[0]
                if q > 2:
                    raise PacketError("SUBSCRIBE requested QoS byte %#x" % q)
                filters.append((f, q))
            else:
                filters.append(f)
        if not filters:
            raise PacketError("%s without topic filters" % name)
        return Packet(ptype, pid, filters)
    if ptype in (PINGREQ, DISCONNECT):
        _flags(flags, 0, "PINGREQ" if ptype == PINGREQ else "DISCONNECT")
        _end(c, "PINGREQ/DISCONNECT")
        return Packet(ptype)
    raise PacketError("packet type %d is not one a connected device sends to IoT Hub" % ptype)


def _flags(flags, expected, name):
    if flags != expected:
        raise PacketError("%s with reserved flags %#x" % (name, flags))


def _end(c, name):
    if c.left():
        raise PacketError("%s longer than its fields" % name)


def server_idle_timeout(keep_alive, cap):
    """IoT Hub closes a connection silent for 1.5 x keep-alive, but never waits longer than `cap`
    (1767 s, Azure's load balancer idle timeout), so keep-alive > 1177 s and keep-alive 0 (no
    keep-alive) both end at the cap."""
    if keep_alive <= 0:
        return float(cap)
    return min(keep_alive * 1.5, float(cap))
