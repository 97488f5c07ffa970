"""Pure byte handling for the AMQP front: the SASL exchange and padding proton's frames.

Why this exists (measured, /work/shared notes "Service-side Azure SDKs"): uamqp (azure-iot-hub)
offers only the SASL mechanism MSSBCBS, which proton as a server never offers; and pyamqp
(azure-eventhub) reads performatives by position, so a frame whose trailing empty fields were
omitted (legal AMQP, and what proton writes) breaks it. The front therefore answers SASL itself
(identity comes later from $cbs tokens, as on IoT Hub) and pads each performative to its full
field count on the way out.
"""
import struct

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
MECHANISMS = (b"MSSBCBS", b"ANONYMOUS", b"PLAIN", b"EXTERNAL")

# performative descriptor code -> number of fields (AMQP 1.0, part 2.7)
FIELDS = {0x10: 10, 0x11: 8, 0x12: 14, 0x13: 11, 0x14: 11, 0x15: 6, 0x16: 3, 0x17: 1, 0x18: 1}


def _frame(frame_type, body, channel=0):
    return struct.pack(">IBBH", 8 + len(body), 2, frame_type, channel) + body


def sasl_mechanisms():
    items = b"".join(bytes([len(m)]) + m for m in MECHANISMS)
    array = bytes([0xE0, len(items) + 2, len(MECHANISMS), 0xA3]) + items   # array8 of sym8
    return _frame(1, b"\x00\x53\x40\xc0" + bytes([len(array) + 1, 1]) + array)


def sasl_outcome_ok():
    return _frame(1, b"\x00\x53\x44\xc0\x03\x01\x50\x00")      # sasl-outcome, code ok


def split_frames(buf):
    """(complete frames, rest) from a byte buffer that starts at a frame boundary."""
    frames, i = [], 0
    while len(buf) - i >= 8:
        size = struct.unpack_from(">I", buf, i)[0]
        if size < 8:
            raise ValueError("frame size %d" % size)
        if len(buf) - i < size:
            break
        frames.append(bytes(buf[i:i + size]))
        i += size
    return frames, buf[i:]


def pad(frame):
    """One AMQP frame with its performative's list padded with nulls to the full field count."""
    doff = frame[4] * 4
    body = frame[doff:]
    if frame[5] != 0 or len(body) < 4 or body[0] != 0 or body[1] != 0x53:
        return frame
    want = FIELDS.get(body[2])
    if want is None:
        return frame
    ctor = body[3]
    if ctor == 0x45:
        count, content, end = 0, b"", 4
    elif ctor == 0xC0:
        size, count = body[4], body[5]
        content, end = body[6:5 + size], 5 + size
    elif ctor == 0xD0:
        size, count = struct.unpack_from(">II", body, 4)
        content, end = body[12:8 + size], 8 + size
    else:
        return frame
    if count >= want:
        return frame
    content = content + b"\x40" * (want - count)
    if len(content) + 1 <= 255:
        lst = bytes([0xC0, len(content) + 1, want]) + content
    else:
        lst = b"\xd0" + struct.pack(">II", len(content) + 4, want) + content
    new_body = body[:3] + lst + body[end:]
    header = frame[:doff]
    return struct.pack(">I", doff + len(new_body)) + header[4:] + new_body
