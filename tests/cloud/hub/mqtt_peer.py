"""Device-side test peers: a paho-mqtt client (well behaved) and raw TLS sockets (hostile)."""
import socket
import ssl
import struct
import threading
import time

import paho.mqtt.client as mqtt

from tests.cloud.hub.conftest import wait_for


class Peer:
    """A paho (1.6.1) device connection that records what it receives."""

    def __init__(self, hub, device_id, key=None, token=None, clean_session=False, keepalive=60):
        self.hub = hub
        self.device_id = device_id
        self.messages = []
        self.connack = []
        self.disconnected = threading.Event()
        self.client = mqtt.Client(client_id=device_id, clean_session=clean_session, protocol=mqtt.MQTTv311)
        self.client.tls_set(ca_certs=hub.ca_pem)
        self.client.username_pw_set(hub.username(device_id), token or hub.device_token(device_id, key))
        self.client.on_connect = lambda c, u, f, rc: self.connack.append(rc)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.qos))
        self.client.on_disconnect = lambda c, u, rc: self.disconnected.set()
        self.keepalive = keepalive

    def connect(self, timeout=10):
        """Returns the CONNACK return code (0 accepted, 5 not authorized)."""
        self.client.connect_async(self.hub.host, self.hub.mqtt_port, keepalive=self.keepalive)
        self.client.loop_start()
        wait_for(lambda: self.connack or self.disconnected.is_set(), timeout, what="CONNACK")
        rc = self.connack[0] if self.connack else -1
        if rc != 0:
            # paho's thread sleeps up to 1 s before it notices; stop it without waiting
            self.client.disconnect()
            threading.Thread(target=self.client.loop_stop, daemon=True).start()
        return rc

    def subscribe(self, *filters, qos=1):
        done = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, granted: done.set()
        self.client.subscribe([(f, qos) for f in filters])
        assert done.wait(10), "no SUBACK"

    def publish(self, topic, payload=b"", qos=1):
        info = self.client.publish(topic, payload, qos)
        if qos:
            info.wait_for_publish(10)
        return info

    def wait_message(self, prefix, timeout=10):
        def find():
            return next((m for m in self.messages if m[0].startswith(prefix)), None)
        return wait_for(find, timeout, what="message on " + prefix)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


# ---- raw MQTT over TLS ---------------------------------------------------------------------------
def _varlen(n):
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id, username, password, clean=False, keepalive=60):
    flags = 0xC0 | (0x02 if clean else 0)
    var = _s("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    payload = _s(client_id) + _s(username) + _s(password)
    body = var + payload
    return b"\x10" + _varlen(len(body)) + body


def publish_packet(topic, payload, qos=0, packet_id=1, retain=False):
    body = _s(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes([0x30 | (qos << 1) | (1 if retain else 0)]) + _varlen(len(body)) + body


def subscribe_packet(topic_filter, qos=1, packet_id=1):
    body = struct.pack("!H", packet_id) + _s(topic_filter) + bytes([qos])
    return b"\x82" + _varlen(len(body)) + body


def tls_socket(hub, timeout=10):
    ctx = ssl.create_default_context(cafile=hub.ca_pem)
    raw = socket.create_connection((hub.host, hub.mqtt_port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=hub.host)


def raw_device(hub, device_id, key, clean=False, keepalive=60):
    """A TLS socket that has sent CONNECT and received CONNACK 0."""
    s = tls_socket(hub)
    s.sendall(connect_packet(device_id, hub.username(device_id), hub.device_token(device_id, key),
                             clean, keepalive))
    connack = _recv_exact(s, 4)
    assert connack[0] == 0x20 and connack[3] == 0, "CONNACK %r" % connack
    return s


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed after %d bytes" % len(buf))
        buf += chunk
    return buf


def closed_by_peer(s, timeout=10):
    """True once the hub has closed the connection (EOF or reset) within timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = s.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionError, ssl.SSLError, OSError):
            return True
        if not data:
            return True
    return False


def read_packet(s, timeout=10):
    """One packet from a raw socket -> (type, flags, body)."""
    s.settimeout(timeout)
    first = _recv_exact(s, 1)[0]
    mult, length = 1, 0
    while True:
        b = _recv_exact(s, 1)[0]
        length += (b & 127) * mult
        mult *= 128
        if not b & 128:
            break
    return first >> 4, first & 15, _recv_exact(s, length) if length else b""


def read_publish(s, timeout=10):
    """The next PUBLISH (other packets skipped) -> (qos, packet_id, topic, payload, dup)."""
    while True:
        ptype, flags, body = read_packet(s, timeout)
        if ptype == 3:
            break
    qos = (flags >> 1) & 3
    tlen = int.from_bytes(body[:2], "big")
    topic = body[2:2 + tlen].decode()
    pos = 2 + tlen
    pid = None
    if qos:
        pid = int.from_bytes(body[pos:pos + 2], "big")
        pos += 2
    return qos, pid, topic, body[pos:], bool(flags & 8)


def puback_packet(packet_id):
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


def twin_request(s, topic, body, rid):
    """Publish a twin request (QoS 0) and return the status of the answer with that $rid."""
    s.sendall(publish_packet(topic, body, qos=0))
    while True:
        qos, pid, t, payload, _ = read_publish(s)
        if ("$rid=%s" % rid) in t and t.startswith("$iothub/twin/res/"):
            if pid:
                s.sendall(puback_packet(pid))
            return int(t.split("/")[3]), payload
