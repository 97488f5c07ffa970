# firmware/runtime/link.py against a scripted in-memory broker (no network, no TLS): packet
# bytes, one write per packet, bounded reads and queues, PUBACK tracking, renewal, backoff and
# the auth-error state. Runs under pytest and under unix MicroPython (tests/mp_runner.py).
import sys


def _import_link():
    # CPython has no usocket/ustruct/ubinascii and no .mplib on its path: alias and add them.
    if sys.implementation.name != "micropython":
        import binascii
        import os
        import socket
        import struct
        for alias, mod in (("usocket", socket), ("ustruct", struct), ("ubinascii", binascii)):
            sys.modules.setdefault(alias, mod)
        lib = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), ".mplib")
        if lib not in sys.path:
            sys.path.append(lib)
    from firmware.runtime import link
    return link


link = _import_link()
from firmware.iothub import sas, topics  # noqa: E402

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def _remaining(data, i=1):
    n = sh = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << sh
        if not b & 0x80:
            return n, i
        sh += 7


class Broker:
    # The server side of one or more connections: answers what it reads, records every write.
    def __init__(self):
        self.connack = 0
        self.puback = True
        self.writes = []        # every sock.write, as bytes
        self.rx = b""           # bytes the device will read
        self.connects = []      # CONNECT packets
        self.params = None

    def publish(self, topic, body, qos=0, pid=1):
        t = topic.encode()
        rem = 2 + len(t) + len(body) + (2 if qos else 0)
        pkt = bytes([0x30 | qos << 1]) + _enc_len(rem) + bytes([len(t) >> 8, len(t) & 255]) + t
        if qos:
            pkt += bytes([pid >> 8, pid & 255])
        self.rx += pkt + body

    # the socket interface the link uses
    def write(self, data):
        data = bytes(data)
        self.writes.append(data)
        kind = data[0] >> 4
        if kind == 1:
            self.connects.append(data)
            self.rx += bytes([0x20, 2, 0, self.connack])
        elif kind == 8:
            rem, i = _remaining(data)
            pid = data[i:i + 2]
            n, j = 0, i + 2
            while j < len(data):
                j += 2 + (data[j] << 8 | data[j + 1]) + 1
                n += 1
            self.rx += bytes([0x90, 2 + n]) + pid + bytes(n)
        elif kind == 3 and (data[0] >> 1) & 3 and self.puback:
            rem, i = _remaining(data)
            tl = data[i] << 8 | data[i + 1]
            self.rx += b"\x40\x02" + data[i + 2 + tl:i + 4 + tl]
        elif kind == 12:
            self.rx += b"\xd0\x00"
        return len(data)

    def read(self, n):
        if not self.rx:
            if self.blocking:
                raise OSError(110)   # what a timed-out TLS read raises
            return None
        out, self.rx = self.rx[:n], self.rx[n:]
        return out

    def setblocking(self, flag):
        self.blocking = flag

    def close(self):
        pass

    def packets(self, kind):
        return [w for w in self.writes if w[0] >> 4 == kind]


def _enc_len(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


class _Raw:
    options = []    # (level, option, value) of every setsockopt, across sockets

    def settimeout(self, t):
        pass

    def setsockopt(self, level, option, value):
        _Raw.options.append((level, option, value))

    def connect(self, addr):
        pass

    def close(self):
        pass


class _SocketModule:
    @staticmethod
    def socket():
        return _Raw()

    @staticmethod
    def getaddrinfo(host, port):
        return [(2, 1, 0, "", (host, port))]


class _SslModule:
    # ssl as the link uses it: SSLContext (each one counted in .contexts), wrap_socket per connect
    CERT_REQUIRED = 2
    PROTOCOL_TLS_CLIENT = 16

    def __init__(self, broker):
        self.broker = broker
        self.contexts = 0

    def SSLContext(self, protocol):
        self.contexts += 1
        return _SslContext(self)

    def wrap_socket(self, raw, **params):
        self.broker.params = params
        self.broker.blocking = True
        return self.broker


class _SslContext:
    # records what the link trusts; wrap_socket hands it to the module's (the tests' hook)
    def __init__(self, module):
        self.module = module
        self.verify_mode = 0
        self.cas = []

    def load_verify_locations(self, cadata):
        self.cas.append(cadata)

    def wrap_socket(self, raw, server_hostname=None):
        return self.module.wrap_socket(raw, cert_reqs=self.verify_mode, cadata=b"".join(self.cas),
                                       cas=list(self.cas), server_hostname=server_hostname)


def _link(broker, **kw):
    link.socket = _SocketModule
    link.ssl = _SslModule(broker)
    args = dict(token_ttl=20, keepalive=60, retry_cap=8)
    args.update(kw)
    rands = [0.5]
    return link.Link("hub.example", 8883, "dev1", KEY, b"der", lambda: rands[0], **args)


def _run(lk, now, events=None):
    out = [] if events is None else events
    lk.step(now, out.append)
    return out


# --- packets ---------------------------------------------------------------------------------

def test_connect_sends_one_packet_with_clean_session_0_keepalive_and_a_fresh_token():
    b = Broker()
    lk = _link(b)
    ev = _run(lk, 1000)
    assert ev[0] == ("connected", 0)
    assert lk.state == link.ONLINE
    assert b.params["cert_reqs"] == 2 and b.params["server_hostname"] == "hub.example"
    assert b.params["cadata"] == b"der"
    pkt = b.connects[0]
    rem, i = _remaining(pkt)
    assert len(pkt) == i + rem
    assert pkt[i:i + 7] == b"\x00\x04MQTT\x04"
    assert pkt[i + 7] == 0xC0             # user + password, CleanSession=0
    assert pkt[i + 8] << 8 | pkt[i + 9] == 60
    assert pkt[i + 10:i + 16] == b"\x00\x04dev1"    # the client id is the device id
    assert topics.username("hub.example", "dev1").encode() in pkt
    tok = pkt[pkt.find(b"SharedAccessSignature"):].decode()
    assert tok == sas.token("hub.example/devices/dev1", KEY, 1020)


def test_hostname_names_the_hub_in_the_token_the_user_name_and_tls():
    # host is where to connect (an address), hostname the hub's name: the hub checks the
    # token's sr against its own name, so all three must use the same one (else CONNACK 5)
    b = Broker()
    lk = _link(b, hostname="myhub.azure-devices.net")
    assert _run(lk, 1000)[0] == ("connected", 0)
    assert b.params["server_hostname"] == "myhub.azure-devices.net"
    pkt = b.connects[0]
    assert topics.username("myhub.azure-devices.net", "dev1").encode() in pkt
    tok = pkt[pkt.find(b"SharedAccessSignature"):].decode()
    assert tok == sas.token("myhub.azure-devices.net/devices/dev1", KEY, 1020)


def test_connect_turns_off_nagle_before_the_tls_handshake():
    # IPPROTO_TCP=6, TCP_NODELAY=1: otherwise the handshake waits on delayed ACKs (~40 ms)
    del _Raw.options[:]
    _run(_link(Broker()), 1000)
    assert (6, 1, 1) in _Raw.options


def test_one_subscribe_with_the_four_filters_then_a_twin_get():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    subs = b.packets(8)
    assert len(subs) == 1
    for f in (topics.c2d_filter("dev1"), topics.TWIN_RES_FILTER, topics.TWIN_DESIRED_FILTER,
              topics.METHODS_FILTER):
        assert f.encode() in subs[0]
    assert b"devices/dev1/messages/devicebound/#\x01" in subs[0]   # C2D at QoS 1
    pubs = b.packets(3)
    assert len(pubs) == 1 and b"$iothub/twin/GET/?$rid=" in pubs[0]


def test_qos1_publish_is_one_write_with_exact_bytes_and_does_not_wait_for_puback():
    b = Broker()
    b.puback = False
    lk = _link(b)
    _run(lk, 1000)
    n = len(b.writes)
    assert lk.publish("t/x", b"hello", qos=1, tag="a")
    assert len(b.writes) == n + 1
    pkt = b.writes[-1]
    pid = pkt[7] << 8 | pkt[8]
    assert pkt == bytes([0x32, 12, 0, 3]) + b"t/x" + bytes([pid >> 8, pid & 255]) + b"hello"
    assert list(lk.inflight) == [pid]


def test_big_publish_is_still_one_write_with_a_multibyte_length():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    body = b"x" * 3000
    n = len(b.writes)
    lk.publish("t/x", body, qos=1, tag="big")
    assert len(b.writes) == n + 1
    rem, i = _remaining(b.writes[-1])
    assert rem == 2 + 3 + 2 + 3000 and i == 3 and len(b.writes[-1]) == i + rem


def test_puback_becomes_an_event_with_the_tag():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    lk.publish("t/x", b"{}", qos=1, tag="order-1")
    ev = _run(lk, 1001)
    assert ("puback", "order-1") in ev
    assert not lk.inflight


def test_a_tag_already_in_flight_is_not_sent_twice():
    b = Broker()
    b.puback = False
    lk = _link(b)
    _run(lk, 1000)
    lk.publish("t/x", b"{}", qos=1, tag="o")
    n = len(b.writes)
    assert lk.publish("t/x", b"{}", qos=1, tag="o")
    assert len(b.writes) == n and len(lk.inflight) == 1


# --- incoming ----------------------------------------------------------------------------------

def test_c2d_is_handled_in_the_loop_then_acknowledged():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.publish("devices/dev1/messages/devicebound/%24.mid=m1&messageType=orderStatus", b"{}", 1, 7)
    seen = []

    def handle(e):
        seen.append(e)
        if e[0] == "c2d":
            assert not b.packets(4), "acknowledged before it was handled"
            lk.publish("t/reply", b"ok", qos=1, tag="r")   # publishing from the handler is fine

    lk.step(1001, handle)
    c2d = [e for e in seen if e[0] == "c2d"]
    assert c2d == [("c2d", {"$.mid": "m1", "messageType": "orderStatus"}, b"{}")]
    assert b.packets(4) == [b"\x40\x02\x00\x07"]


def test_twin_desired_and_method_events():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.publish("$iothub/twin/res/200/?$rid=1", b'{"desired":{}}')
    b.publish("$iothub/twin/PATCH/properties/desired/?$version=5", b'{"sku":"A"}')
    b.publish("$iothub/methods/POST/status/?$rid=9", b"null")
    ev = _run(lk, 1001)
    assert ("twin", "1", 200, b'{"desired":{}}') in ev        # the request id first
    assert ("desired", 5, b'{"sku":"A"}') in ev
    assert ("method", "9", "status", b"null") in ev


def test_foreign_or_malformed_topics_are_counted_not_delivered():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.publish("somewhere/else", b"x", 1, 3)
    b.publish("$iothub/twin/res/abc/?$rid=1", b"x")
    b.publish("$iothub/methods/POST/noquery", b"x")
    ev = _run(lk, 1001)
    assert [e for e in ev if e[0] not in ("puback",)] == []
    assert lk.stats["bad_topics"] == 3
    assert b.packets(4) == [b"\x40\x02\x00\x03"]   # acknowledged all the same
    assert lk.state == link.ONLINE


def test_a_failing_handler_is_counted_and_the_message_still_acknowledged():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.publish("devices/dev1/messages/devicebound/", b"boom", 1, 4)

    def handle(e):
        if e[0] == "c2d":
            raise ValueError("app bug")

    lk.step(1001, handle)
    assert lk.stats["handler_errors"] == 1
    assert b.packets(4) == [b"\x40\x02\x00\x04"]
    assert lk.state == link.ONLINE


def test_a_handler_out_of_memory_leaves_the_c2d_unacknowledged_and_drops_the_link():
    # out of memory is the device's state, not the message's: the hub must deliver it again,
    # and (PUBACKs in order) the message after it in the same read too
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    for pid, body in ((4, b"ok"), (5, b"oom"), (6, b"later")):
        b.publish("devices/dev1/messages/devicebound/", body, 1, pid)
    seen = []

    def handle(e):
        seen.append(e)
        if e[0] == "c2d" and e[2] == b"oom":
            raise MemoryError

    lk.step(1001, handle)
    assert [e[2] for e in seen if e[0] == "c2d"] == [b"ok", b"oom"]
    assert b.packets(4) == [b"\x40\x02\x00\x04"]        # only the one handled before it
    assert lk.stats["handler_errors"] == 1
    assert lk.state == link.OFFLINE and lk.stats["disconnects"] == 1
    assert ("disconnected", "handler out of memory") in seen
    assert lk.next_try > 1001                               # the usual backoff
    lk.step(lk.next_try, handle)
    assert lk.state == link.ONLINE


def test_a_twin_answer_out_of_memory_drops_the_link_and_the_reconnect_gets_the_twin_again():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.publish("$iothub/twin/res/200/?$rid=1", b'{"desired":{}}')

    def handle(e):
        if e[0] == "twin":
            raise MemoryError

    lk.step(1001, handle)
    assert lk.state == link.OFFLINE
    gets = len(b.packets(3))
    lk.step(lk.next_try, handle)
    assert lk.state == link.ONLINE and len(b.packets(3)) == gets + 1   # a fresh twin GET


def test_a_method_out_of_memory_answers_500_and_stays_online():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.publish("$iothub/methods/POST/status/?$rid=9", b"null")

    def handle(e):
        if e[0] == "method":
            raise MemoryError

    lk.step(1001, handle)
    assert lk.stats["handler_errors"] == 1 and lk.state == link.ONLINE
    assert any(b"$iothub/methods/res/500/?$rid=9" in p for p in b.packets(3))


def test_inbox_is_bounded_and_counts_drops_without_acknowledging_them():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    for pid in range(1, 13):
        b.publish("devices/dev1/messages/devicebound/", b"m", 1, pid)
    c = lk.c
    for _ in range(12):
        c.check_msg(1001)
    assert len(c.inbox) == 8 and c.dropped == 4
    assert not b.packets(4)


def test_oversized_message_is_skipped_and_acknowledged():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.publish("devices/dev1/messages/devicebound/", b"x" * 20000, 1, 9)
    ev = _run(lk, 1001)
    assert not [e for e in ev if e[0] == "c2d"]
    assert lk.stats["dropped"] == 1
    assert b.packets(4) == [b"\x40\x02\x00\x09"]
    assert lk.state == link.ONLINE


def test_pubacks_go_in_arrival_order_with_an_oversized_message_in_its_turn():
    # IoT Hub closes the connection on a PUBACK out of order (issue 10)
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.publish("devices/dev1/messages/devicebound/", b"a", 1, 1)
    b.publish("devices/dev1/messages/devicebound/", b"x" * 20000, 1, 2)
    b.publish("devices/dev1/messages/devicebound/", b"c", 1, 3)
    ev = _run(lk, 1001)
    assert [e[2] for e in ev if e[0] == "c2d"] == [b"a", b"c"]
    assert b.packets(4) == [b"\x40\x02\x00\x01", b"\x40\x02\x00\x02", b"\x40\x02\x00\x03"]


def test_a_full_inbox_stops_reading_so_nothing_is_dropped():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    for pid in range(1, 13):
        b.publish("devices/dev1/messages/devicebound/", b"m%d" % pid, 1, pid)
    seen = []
    for t in range(1001, 1005):
        seen += [e[2] for e in _run(lk, t) if e[0] == "c2d"]
    assert seen == [b"m%d" % i for i in range(1, 13)] and lk.c.dropped == 0
    assert [p[3] for p in b.packets(4)] == list(range(1, 13))


def test_a_twin_too_large_to_read_reaches_the_app_without_a_body():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.publish("$iothub/twin/res/200/?$rid=1", b"{" + b" " * 20000 + b"}")
    b.publish("$iothub/twin/PATCH/properties/desired/?$version=7", b"x" * 20000)
    ev = _run(lk, 1001)
    assert ("twin", "1", 200, None) in ev and ("desired", 7, None) in ev


def test_keepalive_is_clamped_to_what_iot_hub_allows():
    lk = _link(Broker(), keepalive=3000)
    assert lk.keepalive == topics.MAX_KEEPALIVE_S == 1177 and lk.c.keepalive == 1177


def test_report_and_twin_get_return_their_request_ids():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    rid = lk.report(b'{"a": 1}')
    assert rid and topics.twin_patch_reported(rid).encode() in b.writes[-1]
    rid2 = lk.twin_get()
    assert rid2 != rid and topics.twin_get(rid2).encode() in b.writes[-1]


def test_nothing_waiting_returns_none_and_a_closed_socket_is_a_disconnect():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    assert lk.c.check_msg(1001) is None
    b.rx = b""
    b.read = lambda n: b""
    ev = _run(lk, 1001)
    assert ev == [("disconnected", "connection closed")]
    assert lk.state == link.OFFLINE and lk.next_try > 1001


def test_messages_read_on_a_lost_connection_are_dropped_with_it():
    # A C2D read just before the connection broke is not handled or acked after reconnect
    # (its packet id belongs to the old connection): the hub delivers it again.
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    topic = "devices/dev1/messages/devicebound/%24.mid=m1"
    b.publish(topic, b"{}", 1, 7)

    def read_then_close(n):
        if not b.rx:
            return b""
        out, b.rx = b.rx[:n], b.rx[n:]
        return out

    b.read = read_then_close
    ev = _run(lk, 1001)
    assert ev == [("disconnected", "connection closed")], ev
    del b.read
    acks = len(b.packets(4))
    ev = _run(lk, lk.next_try)
    ev = _run(lk, lk.next_try + 1, ev)
    assert ev[0][0] == "connected" and not [e for e in ev if e[0] == "c2d"], ev
    assert len(b.packets(4)) == acks, "an old packet id acked on the new connection"
    b.publish(topic, b"{}", 1, 3)           # the hub's redelivery, with a new id
    ev = _run(lk, lk.next_try + 2)
    assert [e[0] for e in ev] == ["c2d"] and b.packets(4)[-1] == b"\x40\x02\x00\x03"


def test_the_loop_waits_on_the_tcp_socket_unless_packets_may_wait_inside_tls():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    assert lk.pollable() is lk.c.sock          # right after connecting: the TLS socket
    _run(lk, 1001)
    assert lk.pollable() is lk.c.raw           # all read: the TCP socket (a real fd)
    for pid in range(1, 11):
        b.publish("devices/dev1/messages/devicebound/", b"m", 1, pid)
    ev = _run(lk, 1002)
    assert len([e for e in ev if e[0] == "c2d"]) == 8
    assert lk.pollable() is lk.c.sock          # stopped at 8 packets: more may wait in TLS
    ev = _run(lk, 1003)
    assert len([e for e in ev if e[0] == "c2d"]) == 2 and lk.pollable() is lk.c.raw
    b.read = lambda n: b""
    _run(lk, 1004)
    assert lk.pollable() is None               # offline


def test_truncated_packet_times_out_instead_of_hanging():
    # The rest of a packet is not waited for: the loop goes on (the button is sampled), and a
    # packet still incomplete after the socket timeout (10 s) is a broken connection.
    b = Broker()
    lk = _link(b, token_ttl=3600)
    _run(lk, 1000)
    b.rx = b"\x30\x20\x00"     # a PUBLISH that never finishes
    assert _run(lk, 1001) == [] and lk.state == link.ONLINE and not b.rx
    assert _run(lk, 1011) == [] and lk.state == link.ONLINE
    ev = _run(lk, 1011.5)
    assert ev == [("disconnected", "incomplete packet")] and lk.state == link.OFFLINE


def test_a_packet_arriving_in_pieces_is_handled_once_whole():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.publish("devices/dev1/messages/devicebound/", b"{}", 1, 5)
    whole, b.rx = b.rx, b""
    ev = []
    for i in range(len(whole)):
        b.rx += whole[i:i + 1]
        _run(lk, 1001 + i * 0.1, ev)
        if i < len(whole) - 1:
            assert ev == [] and not b.packets(4), i
    assert ev == [("c2d", {}, b"{}")] and b.packets(4) == [b"\x40\x02\x00\x05"]
    assert lk.state == link.ONLINE


def test_a_malformed_packet_drops_the_connection():
    b = Broker()
    lk = _link(b)
    _run(lk, 1000)
    b.rx = b"\x40\x03\x00\x01\x00"         # a PUBACK of 3 bytes
    ev = _run(lk, 1001)
    assert ev == [("disconnected", "bad PUBACK")] and lk.state == link.OFFLINE


# --- keep-alive, renewal, reconnect, auth -----------------------------------------------------

def test_keepalive_pings_when_idle_and_a_missing_pingresp_drops_the_link():
    b = Broker()
    lk = _link(b, keepalive=60, token_ttl=3600)
    _run(lk, 1000)
    _run(lk, 1029)
    assert not b.packets(12)
    _run(lk, 1030)
    assert b.packets(12) == [b"\xc0\x00"]
    _run(lk, 1031)                     # PINGRESP read: all well
    assert lk.state == link.ONLINE
    b.write = lambda data: len(data)  # the server stops answering
    _run(lk, 1060)
    ev = _run(lk, 1200)
    assert ("disconnected", "no PINGRESP") in ev


def test_token_is_renewed_by_reconnecting_before_expiry():
    b = Broker()
    lk = _link(b, token_ttl=20)
    _run(lk, 1000)
    renew = lk.renew_at
    assert 1000 < renew <= 1016
    assert _run(lk, renew - 1) == []
    ev = _run(lk, renew)
    assert ev[0] == ("disconnected", "token renewal") and ev[1][0] == "connected"
    assert len(b.connects) == 2 and b.packets(14)    # a clean DISCONNECT first
    tok = b.connects[1][b.connects[1].find(b"SharedAccessSignature"):].decode()
    assert tok == sas.token("hub.example/devices/dev1", KEY, renew + 20)
    assert lk.stats["renewals"] == 1


def test_one_tls_context_made_at_the_first_attempt_serves_every_connect():
    # made once, and before the first TCP connect, even one that fails: a 32-bit heap left in
    # pieces by an offline spell may no longer hold its 1728-byte block (issue 11)
    b = Broker()
    lk = _link(b)

    class _Down(_SocketModule):
        @staticmethod
        def getaddrinfo(host, port):
            raise OSError(-2)

    link.socket = _Down
    _run(lk, 1000)                          # the hub cannot be reached
    assert lk.state == link.OFFLINE and link.ssl.contexts == 1
    link.socket = _SocketModule
    b.connack = 3
    _run(lk, lk.next_try)                   # refused: offline, retried later
    b.connack = 0
    _run(lk, lk.next_try)                   # online
    ev = _run(lk, lk.renew_at)              # and again, with a fresh token
    assert ev[1][0] == "connected" and len(b.connects) == 3
    assert link.ssl.contexts == 1


def test_unacknowledged_publish_is_resent_with_dup_after_reconnect():
    b = Broker()
    b.puback = False
    lk = _link(b)
    _run(lk, 1000)
    lk.publish("t/x", b"{}", qos=1, tag="o1")
    first = b.packets(3)[-1]
    assert not first[0] & 0x08
    b.read = lambda n: b""            # connection lost
    _run(lk, 1001)
    del b.read                        # the broker is back
    b.puback = True
    ev = _run(lk, lk.next_try)
    again = [p for p in b.packets(3) if b"t/x" in p]
    assert len(again) == 2 and again[1][0] & 0x08 and again[1][1:] == first[1:]
    ev = _run(lk, lk.next_try + 1)
    assert ("puback", "o1") in ev


def test_publish_while_offline_is_sent_on_connect_without_dup():
    b = Broker()
    b.connack = 3
    lk = _link(b)
    _run(lk, 1000)
    assert lk.state == link.OFFLINE
    assert lk.publish("t/x", b"{}", qos=1, tag="o")
    b.connack = 0
    _run(lk, lk.next_try)
    sent = [p for p in b.packets(3) if b"t/x" in p]
    assert len(sent) == 1 and not sent[0][0] & 0x08


def test_backoff_grows_with_jitter_up_to_the_cap():
    b = Broker()
    lk = _link(b, retry_cap=8)
    waits = []
    now = 1000

    class _Down(_Raw):
        def connect(self, addr):
            raise OSError(111)

    link.socket = type("S", (), {"socket": staticmethod(lambda: _Down()),
                                 "getaddrinfo": staticmethod(_SocketModule.getaddrinfo)})
    for _ in range(6):
        _run(lk, now)
        waits.append(lk.next_try - now)
        now = lk.next_try
    assert waits[0] < waits[1] < waits[2] < waits[3]
    assert max(waits) <= 8 and min(waits) > 0
    assert lk.stats["connect_failures"] == 6


def test_refused_credentials_are_an_auth_error_with_a_long_backoff():
    b = Broker()
    b.connack = 5
    lk = _link(b)
    ev = _run(lk, 1000)
    assert ev[0][:2] == ("auth_error", 5) and ev[0][2] >= 30
    assert lk.state == link.AUTH_ERROR
    for t in range(1000, 1061):        # one minute of loop turns
        _run(lk, t)
    attempts = len(b.connects)
    assert attempts <= 2, attempts
    assert lk.stats["auth_errors"] == attempts


def test_a_refused_connect_waits_as_retry_py_says_for_its_code():
    from firmware.iothub import retry
    for code, kind in ((3, retry.LATER), (2, retry.FATAL), (1, retry.FATAL)):
        b = Broker()
        b.connack = code
        lk = _link(b)
        _run(lk, 1000)
        assert lk.state == link.OFFLINE
        assert lk.next_try - 1000 == retry.delay_for(kind, 0, 0.5), (code, lk.next_try)
        _run(lk, lk.next_try)
        assert lk.next_try - (1000 + retry.delay_for(kind, 0, 0.5)) == retry.delay_for(kind, 1, 0.5)


def test_an_unusable_key_is_an_auth_error_not_a_crash():
    b = Broker()
    lk = _link(b)
    lk._key = "not base64!"
    ev = _run(lk, 1000)
    assert ev[0][0] == "auth_error" and lk.state == link.AUTH_ERROR
    assert not b.connects


def test_a_ca_the_tls_layer_rejects_is_a_failed_connect_not_a_crash():
    # MicroPython's ssl raises ValueError("invalid cert") for a CA it cannot parse
    b = Broker()
    lk = _link(b)

    class _BadCa(_SslModule):
        def wrap_socket(self, raw, **params):
            raise ValueError("invalid cert")

    link.ssl = _BadCa(b)
    ev = _run(lk, 1000)
    assert ev == [("connect_failed", "invalid cert")]   # reported as an event, not printed
    assert lk.state == link.OFFLINE and lk.next_try > 1000
    assert lk.stats["connect_failures"] == 1


def test_subscription_refused_is_a_failed_connect():
    b = Broker()
    lk = _link(b)
    orig = b.write

    def write(data):
        n = orig(data)
        if data[0] >> 4 == 8:
            b.rx = b.rx[:-1] + b"\x80"
        return n

    b.write = write
    _run(lk, 1000)
    assert lk.state == link.OFFLINE and lk.stats["connect_failures"] == 1



def test_a_host_that_does_not_resolve_is_reported_as_such():
    b = Broker()
    lk = _link(b)

    class _NoDns(_SocketModule):
        @staticmethod
        def getaddrinfo(host, port):
            raise OSError(-2)

    link.socket = _NoDns
    ev = _run(lk, 1000)
    assert ev == [("connect_failed", link.HOST_NOT_FOUND)] and lk.state == link.OFFLINE
    link.socket = _SocketModule


def test_every_root_of_the_bundle_is_loaded_one_by_one():
    # MicroPython's cadata takes one DER certificate: the link loads each root separately
    b = Broker()
    link.socket = _SocketModule
    link.ssl = _SslModule(b)
    lk = link.Link("hub.example", 8883, "dev1", KEY, (b"root1", b"root2", b"root3"), lambda: 0.5)
    _run(lk, 1000)
    assert b.params["cas"] == [b"root1", b"root2", b"root3"] and b.params["cert_reqs"] == 2
