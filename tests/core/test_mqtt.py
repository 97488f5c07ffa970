# firmware/iothub/mqtt.py, the device's MQTT 3.1.1 packets without I/O: every encoder byte for
# byte (hand-written from the MQTT 3.1.1 spec, section numbers in the comments), the decoder fed
# whole, split at every byte boundary, with trailing data, and with malformed input.
# Runs under pytest and under the unix MicroPython (tests/mp_runner.py).
from firmware.iothub import mqtt
from tests.core.check import raises


def _len(n):
    # remaining length, as the spec's 2.2.3 table writes it
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


# --- encoders ----------------------------------------------------------------------------------

def test_connect_bytes():
    buf = bytearray(64)
    out = mqtt.connect(buf, b"dev1", b"hub/dev1/?api-version=x", b"pw", 60, False)
    want = (b"\x10" + bytes([10 + 6 + 25 + 4]) + b"\x00\x04MQTT\x04" + b"\xc0" + b"\x00\x3c"
            + b"\x00\x04dev1" + b"\x00\x17hub/dev1/?api-version=x" + b"\x00\x02pw")
    assert bytes(out) == want
    out = mqtt.connect(buf, b"d", b"u", b"p", 0x1234, True)
    assert bytes(out) == b"\x10\x13\x00\x04MQTT\x04\xc2\x12\x34\x00\x01d\x00\x01u\x00\x01p"


def test_encoders_use_the_callers_buffer_when_it_fits_and_a_bigger_one_when_not():
    buf = bytearray(16)
    small = mqtt.publish(buf, b"t", b"x", 0, 0, False)
    small[0] = 0x99                         # a view of buf itself: no copy was made
    assert buf[0] == 0x99
    big = mqtt.publish(buf, b"t", b"x" * 100, 0, 0, False)
    assert len(big) == 2 + 3 + 100 and buf[0] == 0x99


def test_publish_qos0_bytes():
    out = mqtt.publish(bytearray(32), b"a/b", b"hello", 0, 0, False)
    assert bytes(out) == b"\x30\x0a\x00\x03a/bhello"


def test_publish_qos1_bytes_with_and_without_dup():
    buf = bytearray(32)
    out = mqtt.publish(buf, b"a/b", b"hi", 1, 0x0102, False)
    assert bytes(out) == b"\x32\x09\x00\x03a/b\x01\x02hi"
    out = mqtt.publish(buf, b"a/b", b"hi", 1, 0xFFFF, True)
    assert bytes(out) == b"\x3a\x09\x00\x03a/b\xff\xffhi"


def test_publish_empty_payload():
    assert bytes(mqtt.publish(bytearray(8), b"t", b"", 0, 0, False)) == b"\x30\x03\x00\x01t"


EDGES = ((127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"), (16384, b"\x80\x80\x01"),
         (2097151, b"\xff\xff\x7f"), (2097152, b"\x80\x80\x80\x01"))


def test_remaining_length_edges():
    # 3.1.1 2.2.3: 127 | 128 | 16383 | 16384 | 2097151 | 2097152 take 1, 2, 2, 3, 3, 4 bytes.
    # Whole packets up to 16 KB (a 2 MB one does not fit the MicroPython test heap twice).
    buf = bytearray(8)
    for rem, enc in EDGES:
        assert _len(rem) == enc
        assert mqtt._head(buf, 0x30, rem) == 1 + len(enc) and bytes(buf[:1 + len(enc)]) == b"\x30" + enc
        if rem <= 16384:
            payload = bytes(rem - 3)            # topic length 2 + topic "t" 1
            out = mqtt.publish(buf, b"t", payload, 0, 0, False)
            assert len(out) == 1 + len(enc) + rem, rem
            assert bytes(out[:1 + len(enc) + 3]) == b"\x30" + enc + b"\x00\x01t", rem
    raises(ValueError, mqtt._head, buf, 0x30, mqtt.MAX_REMAINING + 1)


def test_subscribe_bytes():
    out = mqtt.subscribe(bytearray(64), 7, ((b"a/#", 1), (b"$x/+", 0)))
    assert bytes(out) == b"\x82\x0f\x00\x07\x00\x03a/#\x01\x00\x04$x/+\x00"


def test_puback_bytes():
    buf = bytearray(8)
    assert bytes(mqtt.puback(buf, 0x0A0B)) == b"\x40\x02\x0a\x0b"


# --- decoder -----------------------------------------------------------------------------------

CONNACK = b"\x20\x02\x01\x00"
PUBACK = b"\x40\x02\x12\x34"
SUBACK = b"\x90\x06\x00\x05\x01\x00\x00\x80"
PINGRESP = b"\xd0\x00"
PUB0 = b"\x30\x08\x00\x03a/bxyz"
PUB1 = b"\x32\x0a\x00\x03a/b\x00\x09xyz"
DECODED = {
    CONNACK: (mqtt.CONNACK, 1, 0),
    PUBACK: (mqtt.PUBACK, 0x1234),
    SUBACK: (mqtt.SUBACK, 5, b"\x01\x00\x00\x80"),
    PINGRESP: (mqtt.PINGRESP,),
    PUB0: (mqtt.PUBLISH, b"a/b", b"xyz", 0, 0),
    PUB1: (mqtt.PUBLISH, b"a/b", b"xyz", 1, 9),
    b"\x30\x05\x00\x03a/b": (mqtt.PUBLISH, b"a/b", b"", 0, 0),
    b"\x30\x02\x00\x00": (mqtt.PUBLISH, b"", b"", 0, 0),
    b"\xb0\x02\x00\x01": (0xB0, None),          # UNSUBACK: known shape, nothing to do
}


def _decode_all(d, chunks):
    # feed chunk after chunk, each until it is used up; every packet that completes
    out = []
    for c in chunks:
        i = 0
        while i < len(c):
            i += d.feed(c, i)
            p = d.take()
            if p is not None:
                out.append(p)
    return out


def _packets(p):
    # a packet tuple with bytearrays as bytes, for comparing
    return tuple(bytes(x) if isinstance(x, (bytes, bytearray)) else x for x in p)


def test_each_packet_whole():
    for raw, want in DECODED.items():
        d = mqtt.Decoder(1024)
        got = _decode_all(d, [raw])
        assert [_packets(p) for p in got] == [want], raw
        assert not d.busy()


def test_each_packet_split_at_every_byte_boundary():
    for raw, want in DECODED.items():
        for cut in range(1, len(raw)):
            d = mqtt.Decoder(1024)
            got = _decode_all(d, [raw[:cut]])
            assert got == [] and d.busy(), (raw, cut)
            got = _decode_all(d, [raw[cut:]])
            assert [_packets(p) for p in got] == [want], (raw, cut)
            assert not d.busy()


def test_one_byte_at_a_time_and_with_trailing_data():
    stream = PUB1 + PUBACK + PINGRESP + PUB0 + CONNACK[:3]
    d = mqtt.Decoder(1024)
    one = _decode_all(d, [stream[i:i + 1] for i in range(len(stream))])
    d2 = mqtt.Decoder(1024)
    whole = _decode_all(d2, [stream])
    assert [_packets(p) for p in one] == [_packets(p) for p in whole] == [
        DECODED[PUB1], DECODED[PUBACK], DECODED[PINGRESP], DECODED[PUB0]]
    assert d.busy() and d2.busy()               # the CONNACK's last byte has not come
    assert _decode_all(d2, [CONNACK[3:]]) == [DECODED[CONNACK]]


def test_feed_stops_at_the_end_of_a_packet():
    d = mqtt.Decoder(1024)
    data = PUBACK + PINGRESP
    assert d.feed(data) == 4 and d.take() == DECODED[PUBACK]
    assert d.feed(data, 4) == 2 and d.take() == DECODED[PINGRESP]
    assert d.take() is None


def test_want_never_reaches_past_the_packet():
    # a reader asks for want() bytes at a time: the stream splits exactly at packet ends
    stream = PUB1 + PUBACK + PINGRESP + SUBACK
    d = mqtt.Decoder(1024)
    i, got = 0, []
    while i < len(stream):
        n = d.want()
        assert n >= 1
        piece = stream[i:i + n]
        assert d.feed(piece) == len(piece)
        i += len(piece)
        p = d.take()
        if p is not None:
            got.append(_packets(p))
    assert got == [DECODED[PUB1], DECODED[PUBACK], DECODED[PINGRESP], DECODED[SUBACK]]


def test_a_payload_read_in_one_piece_is_not_copied():
    d = mqtt.Decoder(1024)
    head = PUB1[:9]
    payload = b"xyz"
    while head:
        piece = head[:d.want()]
        head = head[len(piece):]
        d.feed(piece)
    assert d.want() == 3
    d.feed(payload)
    assert d.take()[2] is payload


def test_remaining_length_edges_decode():
    zeros = bytes(256)
    for rem, enc in EDGES:
        d = mqtt.Decoder(16384)
        got = _decode_all(d, [b"\x30" + enc + b"\x00\x01t"])
        left = rem - 3
        while left:                         # the payload, streamed: kept up to 16 KB
            n = min(left, 256)
            got += _decode_all(d, [zeros[:n]])
            left -= n
        (p,) = got
        assert p[1] == b"t", rem
        if rem - 3 <= 16384:
            assert bytes(p[2]) == bytes(rem - 3), rem
        else:
            assert p[2] is None, rem


def test_a_five_byte_remaining_length_is_malformed():
    d = mqtt.Decoder(1024)
    raises(ValueError, d.feed, b"\x30\xff\xff\xff\xff\x01")
    d = mqtt.Decoder(1024)                      # also when it comes a byte at a time
    for b in b"\x30\xff\xff\xff":
        d.feed(bytes([b]))
    raises(ValueError, d.feed, b"\xff")


def test_malformed_packets_raise_value_error():
    for raw in (b"\x20\x03\x00\x00\x00",       # CONNACK of 3 bytes
                b"\x40\x01\x00",               # PUBACK of 1
                b"\x90\x02\x00\x01",           # SUBACK without a code
                b"\x36\x05\x00\x01t\x00\x01",  # QoS 3
                b"\x30\x01\x00",               # PUBLISH shorter than its topic length
                b"\x30\x04\x00\x05abcd",       # topic longer than the packet
                b"\x32\x04\x00\x02ab"):        # QoS 1 without room for the packet id
        d = mqtt.Decoder(1024)
        raises(ValueError, _decode_all, d, [raw])


def test_a_big_publish_is_counted_past_in_bounded_pieces_and_keeps_its_packet_id():
    body = b"x" * 20000
    raw = b"\x32" + _len(2 + 3 + 2 + len(body)) + b"\x00\x03a/b\x00\x2a" + body + PUBACK
    d = mqtt.Decoder(16384)
    i, got, asked = 0, [], []
    while i < len(raw):
        n = d.want()
        asked.append(n)
        i += d.feed(raw[i:i + n])
        p = d.take()
        if p is not None:
            got.append(_packets(p))
    assert got == [(mqtt.PUBLISH, b"a/b", None, 1, 0x2a), DECODED[PUBACK]]
    assert max(asked) <= 256
    # fed whole, nothing of the payload is kept either
    d = mqtt.Decoder(16384)
    assert [_packets(p) for p in _decode_all(d, [raw])] == got


def test_a_too_long_topic_is_counted_past_too():
    raw = b"\x32" + _len(2 + 300 + 2 + 1) + b"\x01\x2c" + b"t" * 300 + b"\x00\x07" + b"p"
    d = mqtt.Decoder(256)
    assert [_packets(p) for p in _decode_all(d, [raw])] == [(mqtt.PUBLISH, None, None, 1, 7)]


def test_a_big_packet_of_another_kind_is_malformed():
    d = mqtt.Decoder(16)
    raises(ValueError, d.feed, b"\x90\x20\x00\x01")


def test_reset_forgets_a_partial_packet():
    d = mqtt.Decoder(1024)
    d.feed(PUB1[:5])
    d.reset()
    assert not d.busy()
    assert _decode_all(d, [PUBACK]) == [DECODED[PUBACK]]
