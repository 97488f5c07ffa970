# MQTT 3.1.1 packets as the device uses them, without I/O (sans-IO): bytes in, packets out.
#
# Encoders write one whole packet into the caller's buffer (a new one only when it does not
# fit) and return a memoryview of it, for ONE socket write. Only what a device talking to IoT
# Hub sends: CONNECT (user name + password, no will), PUBLISH at QoS 0/1 (DUP from the
# caller), SUBSCRIBE with several filters, PUBACK. PINGREQ (c0 00) and DISCONNECT (e0 00) are
# two constant bytes that umqtt.simple's ping() and disconnect() write.
#
# Decoder takes the bytes a server sends, in pieces of any size, and gives back whole packets,
# so a reader never waits for the rest of a packet: it feeds what has arrived and comes back
# later. A PUBLISH whose topic or payload is bigger than the decoder's limit is counted past in
# bounded pieces, never held, and still comes out (payload None) so it can be acknowledged.
import struct

try:
    from micropython import const
except ImportError:  # CPython (the host's hub and tools)
    def const(x):
        return x

_CONNECT = const(0x10)
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
_SUBSCRIBE = const(0x82)
SUBACK = 0x90
PINGRESP = 0xD0
MAX_REMAINING = 268435455   # 4 length bytes of 7 bits
_SKIP_PIECE = const(256)    # bytes asked for at a time while counting past a big PUBLISH


def _room(buf, rem):
    # buf, or a new buffer when the whole packet (first byte, 1-4 length bytes, rem) does not fit
    n, r = 2, rem
    while r > 0x7F and n < 5:
        r >>= 7
        n += 1
    return buf if n + rem <= len(buf) else bytearray(n + rem)


def _head(buf, first, rem):
    # The fixed header (first byte, remaining length in 1-4 bytes); returns where the rest goes.
    if rem > MAX_REMAINING:
        raise ValueError("packet too big")
    buf[0] = first
    i = 1
    while rem > 0x7F:
        buf[i] = (rem & 0x7F) | 0x80
        rem >>= 7
        i += 1
    buf[i] = rem
    return i + 1


def _str(buf, i, s):
    n = len(s)
    struct.pack_into("!H", buf, i, n)
    buf[i + 2:i + 2 + n] = s
    return i + 2 + n


def connect(buf, client_id, user, password, keepalive, clean_session):
    # client_id, user, password: bytes. User name and password flags always set.
    rem = 10 + 2 + len(client_id) + 2 + len(user) + 2 + len(password)
    buf = _room(buf, rem)
    i = _head(buf, _CONNECT, rem)
    buf[i:i + 7] = b"\x00\x04MQTT\x04"
    buf[i + 7] = 0xC0 | (2 if clean_session else 0)
    struct.pack_into("!H", buf, i + 8, keepalive)
    i = _str(buf, i + 10, client_id)
    i = _str(buf, i, user)
    i = _str(buf, i, password)
    return memoryview(buf)[:i]


def publish(buf, topic, payload, qos, pid, dup):
    # topic, payload: bytes. pid only with qos 1; never retained.
    rem = 2 + len(topic) + len(payload) + (2 if qos else 0)
    buf = _room(buf, rem)
    i = _str(buf, _head(buf, PUBLISH | (8 if dup else 0) | qos << 1, rem), topic)
    if qos:
        struct.pack_into("!H", buf, i, pid)
        i += 2
    buf[i:i + len(payload)] = payload
    return memoryview(buf)[:i + len(payload)]


def subscribe(buf, pid, filters):
    # filters: a sequence of (filter bytes, qos), all in one packet.
    rem = 2
    for f, _ in filters:
        rem += 2 + len(f) + 1
    buf = _room(buf, rem)
    i = _head(buf, _SUBSCRIBE, rem)
    struct.pack_into("!H", buf, i, pid)
    i += 2
    for f, qos in filters:
        i = _str(buf, i, f)
        buf[i] = qos
        i += 1
    return memoryview(buf)[:i]


def puback(buf, pid):
    buf[0] = PUBACK
    buf[1] = 2
    struct.pack_into("!H", buf, 2, pid)
    return memoryview(buf)[:4]


# Decoder stages
_FIRST = const(0)       # the packet's first byte
_LENGTH = const(1)      # remaining-length bytes
_BODY = const(2)        # the whole body of a packet other than PUBLISH
_TOPIC_LEN = const(3)   # PUBLISH: the topic's 2-byte length
_TOPIC = const(4)       # PUBLISH: the topic (skipped when too long)
_PID = const(5)         # PUBLISH: the packet id (QoS > 0)
_PAYLOAD = const(6)     # PUBLISH: the payload (skipped when too long)


class Decoder:
    # feed(data, i) takes bytes from data[i:] up to the end of the packet being read and returns
    # how many it took; once a packet is complete, take() returns it (None before). want() is
    # how many bytes finish the current piece (never past the packet's end), so a reader can
    # ask its socket for exactly that. Packets out, as tuples:
    #   (CONNACK, session_present, return_code)   (SUBACK, pid, return codes bytes)
    #   (PUBLISH, topic bytes, payload bytes or None when too big, qos, pid or 0)
    #   (PUBACK, pid)   (PINGRESP,)   (first byte & 0xF0, None) for any other kind
    # A malformed packet raises ValueError: the stream is out of step, drop the connection.

    def __init__(self, limit):
        self.limit = limit      # largest topic or payload kept, in bytes
        self.reset()

    def reset(self):
        # A new connection: forget any partial packet.
        self._stage = _FIRST
        self._packet = None
        self._start_piece(0, True)

    def busy(self):
        # True in the middle of a packet (some of it read, not all).
        return self._stage != _FIRST or self._got > 0

    def want(self):
        if self._stage == _FIRST:
            return 2            # the first byte and the first length byte: no packet is shorter
        if self._stage == _LENGTH:
            return 1
        if self._keep:
            return self._need - self._got
        return min(self._need - self._got, _SKIP_PIECE)

    def take(self):
        p = self._packet
        self._packet = None
        return p

    def feed(self, data, i=0):
        start = i
        end = len(data)
        while i < end and self._packet is None:
            if self._stage == _FIRST:
                self._op = data[i]
                i += 1
                self._rem = self._shift = 0
                self._stage = _LENGTH
            elif self._stage == _LENGTH:
                b = data[i]
                i += 1
                self._rem |= (b & 0x7F) << self._shift
                if b & 0x80:
                    self._shift += 7
                    if self._shift > 21:
                        raise ValueError("bad packet length")
                    continue
                # the body begins
                op, rem = self._op, self._rem
                if op & 0xF0 == PUBLISH:
                    if (op >> 1) & 3 == 3:
                        raise ValueError("bad PUBLISH QoS")
                    if rem < 2:
                        raise ValueError("bad PUBLISH")
                    self._qos = (op >> 1) & 3
                    self._topic = None
                    self._pid = 0
                    self._stage = _TOPIC_LEN
                    self._start_piece(2, True)
                    continue
                if rem > self.limit:
                    raise ValueError("packet too big")
                self._stage = _BODY
                self._start_piece(rem, True)
                if rem == 0:
                    self._piece_done(b"")
            else:
                # a piece: a run of bytes that is kept (as one bytes object) or counted past
                n = min(self._need - self._got, end - i)
                if self._keep:
                    if self._got == 0 and n == self._need and i == 0 and end == n and type(data) is bytes:
                        self._piece = data          # exactly this piece, as the socket gave it: no copy
                    else:
                        if self._piece is None:
                            self._piece = bytearray(self._need)
                        memoryview(self._piece)[self._got:self._got + n] = memoryview(data)[i:i + n]
                self._got += n
                i += n
                if self._got == self._need:
                    self._piece_done(self._piece)
        return i - start

    def _start_piece(self, n, keep):
        self._need = n
        self._got = 0
        self._keep = keep
        self._piece = None

    def _piece_done(self, piece):
        # The piece being read is complete: start the next one, or the packet is whole.
        st = self._stage
        if st == _TOPIC_LEN:
            tl = piece[0] << 8 | piece[1]
            self._rem -= 2 + tl + (2 if self._qos else 0)   # from here on: the payload's size
            if self._rem < 0:
                raise ValueError("bad PUBLISH")
            self._stage = _TOPIC
            self._start_piece(tl, tl <= self.limit)
            if tl == 0:
                self._piece_done(b"")
            return
        if st == _TOPIC:
            self._topic = piece
            if self._qos:
                self._stage = _PID
                return self._start_piece(2, True)
            st = _PID
            piece = None
        if st == _PID:
            if piece is not None:
                self._pid = piece[0] << 8 | piece[1]
            self._stage = _PAYLOAD
            keep = self._rem <= self.limit and self._topic is not None
            self._start_piece(self._rem, keep)
            if self._rem == 0:
                self._piece_done(b"")
            return
        if st == _BODY:
            kind = self._op & 0xF0
            if kind == CONNACK:
                if len(piece) != 2:
                    raise ValueError("bad CONNACK")
                packet = (CONNACK, piece[0] & 1, piece[1])
            elif kind == PUBACK:
                if len(piece) != 2:
                    raise ValueError("bad PUBACK")
                packet = (PUBACK, piece[0] << 8 | piece[1])
            elif kind == SUBACK:
                if len(piece) < 3:
                    raise ValueError("bad SUBACK")
                packet = (SUBACK, piece[0] << 8 | piece[1], bytes(piece[2:]))
            elif kind == PINGRESP:
                packet = (PINGRESP,)
            else:
                packet = (kind, None)
        else:
            # _PAYLOAD: piece is None when it was counted past
            packet = (PUBLISH, self._topic, piece if self._topic is not None else None,
                      self._qos, self._pid)
        self._packet = packet
        self._stage = _FIRST
        self._start_piece(0, True)
