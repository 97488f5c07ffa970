# The device's one connection to IoT Hub: MQTT 3.1.1 over TLS on top of umqtt.simple.
#
# What this adds to umqtt.simple (and why):
# - every packet is built in one preallocated buffer and written with ONE socket write:
#   umqtt's several small writes per packet cost ~44 ms per QoS 1 publish on loopback TLS
#   (Nagle + delayed ACK); one write makes it ~1 ms.
# - QoS 1 publish does not wait for PUBACK: message ids are tracked in flight, a PUBACK is
#   reported as an event, unacknowledged messages are re-sent with DUP after a reconnect.
# - no endless blocking read: a poll reads one byte non-blocking; the rest of a packet,
#   connect and TLS handshake are bounded by a socket timeout.
# - incoming PUBLISHes go to a bounded queue (drops are counted, a dropped QoS 1 message is
#   not acknowledged, so the hub delivers it again) and are handled in the loop, never inside
#   a socket callback; a QoS 1 message is acknowledged after it was handled.
# - SAS token made fresh at every connect and renewed by reconnecting at sas.renew_at();
#   backoff with jitter; CONNACK 4/5 is a separate auth-error state with a long backoff.
# - after every connect: one SUBSCRIBE with the four IoT Hub filters, then a twin GET.
import gc
import socket
import ssl
import struct

from umqtt.simple import MQTTClient, MQTTException

from firmware.iothub import retry, sas, topics

try:
    from micropython import const
except ImportError:  # CPython (tests)
    def const(x):
        return x

OFFLINE = "offline"
ONLINE = "online"
AUTH_ERROR = "auth_error"

_BUF_SIZE = const(512)      # one packet up to this size goes out without allocating
_INBOX_MAX = const(8)       # incoming messages waiting for the loop
_INFLIGHT_MAX = const(8)    # QoS 1 publishes waiting for PUBACK
_PACKETS_PER_STEP = const(8)
_AUTH_MIN_S = const(30)     # never more than 2 connects a minute with refused credentials
_IPPROTO_TCP = const(6)     # the same numbers on Linux and lwIP; the unix port names neither
_TCP_NODELAY = const(1)
_MAX_IN = const(16384)      # a bigger incoming message is read past, counted and not kept


class _Client(MQTTClient):
    # umqtt.simple with single-write packets, bounded reads and a queue for incoming messages.

    def __init__(self, client_id, server, port, user, keepalive, ssl_params, timeout):
        # Only the arguments every umqtt.simple version takes: 1.3.4 has ssl=/ssl_params=,
        # newer micropython-lib versions take ssl=<SSLContext> and no ssl_params. TLS is done
        # here in connect() with the legacy parameters, so both behave the same.
        super().__init__(client_id, server, port, user, "", keepalive)
        self.ssl = True
        self.ssl_params = ssl_params
        self.timeout = timeout
        self.raw = None
        self.sock = None
        self._buf = bytearray(_BUF_SIZE)
        self.inbox = []     # (topic bytes, payload bytes, pid or 0 for QoS 0)
        self.acked = []     # PUBACKed packet ids, for the Link to report
        self.dropped = 0
        self.pingresp = False

    # --- writing ---------------------------------------------------------------------------

    def _packet(self, size):
        return self._buf if size <= len(self._buf) else bytearray(size)

    def _write(self, buf, n):
        self.sock.write(memoryview(buf)[:n])

    @staticmethod
    def _put_len(buf, i, n):
        while n > 0x7F:
            buf[i] = (n & 0x7F) | 0x80
            n >>= 7
            i += 1
        buf[i] = n
        return i + 1

    @staticmethod
    def _put_str(buf, i, s):
        n = len(s)
        struct.pack_into("!H", buf, i, n)
        buf[i + 2:i + 2 + n] = s
        return i + 2 + n

    def connect(self, clean_session=False):
        # TCP + TLS + CONNECT, each step bounded by the socket timeout. Returns session present.
        self.close()
        raw = socket.socket()
        self.raw = raw
        try:
            raw.settimeout(self.timeout)
            try:
                # Packets already leave in one write each; without NODELAY the TLS handshake's
                # small writes wait for the peer's delayed ACK (~40 ms of a ~45 ms connect).
                raw.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
            except OSError:
                pass  # a port without the option still works, only slower
            raw.connect(socket.getaddrinfo(self.server, self.port)[0][-1])
            self.sock = ssl.wrap_socket(raw, **self.ssl_params)
            cid, user, pswd = _b(self.client_id), _b(self.user), _b(self.pswd)
            rem = 10 + 2 + len(cid) + 2 + len(user) + 2 + len(pswd)
            buf = self._packet(rem + 5)
            buf[0] = 0x10
            i = self._put_len(buf, 1, rem)
            buf[i:i + 7] = b"\x00\x04MQTT\x04"
            buf[i + 7] = 0xC0 | (clean_session << 1)   # user name + password flags
            struct.pack_into("!H", buf, i + 8, self.keepalive)
            i = self._put_str(buf, i + 10, cid)
            i = self._put_str(buf, i, user)
            i = self._put_str(buf, i, pswd)
            self._write(buf, i)
            resp = self._read(4)
            if resp[0] != 0x20 or resp[1] != 0x02:
                raise OSError("bad CONNACK")
            if resp[3]:
                raise MQTTException(resp[3])
            return resp[2] & 1
        except BaseException:
            self.close()
            raise

    def close(self):
        # What was read on this connection ends with it: packet ids are per connection (an
        # old id acked on a new connection could complete another message), and the hub
        # delivers unacknowledged QoS 1 messages again; PUBACKed publishes are re-sent.
        for s in (self.sock, self.raw):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.sock = self.raw = None
        self.inbox = []
        self.acked = []
        self.pingresp = False

    def disconnect(self):
        try:
            self.sock.write(b"\xe0\x00")
        except (OSError, AttributeError):
            pass
        self.close()

    def ping(self):
        self.sock.write(b"\xc0\x00")

    def publish(self, topic, msg, retain=False, qos=0, pid=0, dup=False):
        # One write per packet; QoS 1 returns at once (the PUBACK shows up in self.acked).
        topic, msg = _b(topic), _b(msg)
        rem = 2 + len(topic) + len(msg) + (2 if qos else 0)
        buf = self._packet(rem + 5)
        buf[0] = 0x30 | (dup << 3) | (qos << 1) | retain
        i = self._put_str(buf, self._put_len(buf, 1, rem), topic)
        if qos:
            struct.pack_into("!H", buf, i, pid)
            i += 2
        buf[i:i + len(msg)] = msg
        self._write(buf, i + len(msg))

    def subscribe_all(self, filters):
        # One SUBSCRIBE carrying every (filter, qos); waits for its SUBACK (bounded).
        self.pid = self.pid % 65535 + 1
        rem = 2
        for f, _ in filters:
            rem += 2 + len(f) + 1
        buf = self._packet(rem + 5)
        buf[0] = 0x82
        i = self._put_len(buf, 1, rem)
        struct.pack_into("!H", buf, i, self.pid)
        i += 2
        for f, qos in filters:
            i = self._put_str(buf, i, _b(f))
            buf[i] = qos
            i += 1
        self._write(buf, i)
        while True:
            op = self.wait_msg(block=True)
            if op == 0x90:
                codes = self._suback
                if len(codes) != len(filters) or 0x80 in codes:
                    raise OSError("subscription refused")
                return

    def ack(self, pid):
        buf = self._buf
        buf[0] = 0x40
        buf[1] = 2
        struct.pack_into("!H", buf, 2, pid)
        self._write(buf, 4)

    # --- reading ---------------------------------------------------------------------------

    def _read(self, n):
        # Exactly n bytes or OSError (timeout or closed): never a short packet.
        data = self.sock.read(n)
        if data is None or len(data) != n:
            if not data:
                raise OSError("connection closed")
            while len(data) < n:
                more = self.sock.read(n - len(data))
                if not more:
                    raise OSError("connection closed")
                data += more
        return data

    def _recv_len(self):
        n = sh = 0
        while True:
            b = self._read(1)[0]
            n |= (b & 0x7F) << sh
            if not b & 0x80:
                return n
            sh += 7
            if sh > 21:
                raise OSError("bad packet length")

    def wait_msg(self, block=False):
        # Handle at most one incoming packet; None when nothing was waiting (non-blocking).
        if block:
            first = self._read(1)
        else:
            self.sock.setblocking(False)
            first = self.sock.read(1)
            self.raw.settimeout(self.timeout)
            if first is None:
                return None
            if first == b"":
                raise OSError("connection closed")
        op = first[0]
        sz = self._recv_len()
        kind = op & 0xF0
        if kind == 0x30:
            return self._incoming(op, sz)
        body = self._read(sz) if sz else b""
        if kind == 0x40 and sz == 2:          # PUBACK
            self.acked.append(body[0] << 8 | body[1])
        elif kind == 0x90:                    # SUBACK
            self._suback = body[2:]
        elif kind == 0xD0:                    # PINGRESP
            self.pingresp = True
        return op

    def _incoming(self, op, sz):
        n = self._read(2)
        n = n[0] << 8 | n[1]
        topic = self._read(n)
        sz -= n + 2
        pid = 0
        qos = (op >> 1) & 3
        if qos:
            p = self._read(2)
            pid = p[0] << 8 | p[1]
            sz -= 2
        if sz < 0:
            raise OSError("bad PUBLISH")
        if sz > _MAX_IN:
            # too big to hold (a hostile or broken sender): skip it in small pieces and
            # acknowledge it, or the hub would deliver it again after every reconnect
            while sz:
                sz -= len(self._read(min(sz, 256)))
            self.dropped += 1
            if qos == 1:
                self.ack(pid)
            return op
        msg = self._read(sz) if sz else b""
        if qos == 2 or len(self.inbox) >= _INBOX_MAX:
            self.dropped += 1     # not acknowledged: the hub delivers a QoS 1 message again
        else:
            self.inbox.append((topic, msg, pid))
        return op


def _b(s):
    return s.encode() if isinstance(s, str) else s


class Link:
    # Keeps one device connected. Drive it with step(now, handle) from the main loop;
    # `handle(event)` receives tuples:
    #   ("connected", session_present)     ("disconnected", reason)
    #   ("auth_error", connack_code, retry_in_s)
    #   ("puback", tag)                    a QoS 1 publish was acknowledged by the hub
    #   ("c2d", props dict, body bytes)    ("twin", status, rid, body bytes)
    #   ("desired", version, body bytes)   ("method", name, rid, body bytes)
    # `now` is Unix seconds; `rand()` returns a float in [0, 1).

    def __init__(self, host, port, device_id, key_b64, ca_der, rand, token_ttl=3600,
                 keepalive=60, timeout=10, retry_cap=60, hostname=None):
        self.device_id = device_id
        self._key = key_b64
        name = hostname or host    # the hub's name: token resource, user name and TLS name agree
        self._resource = sas.device_resource(name, device_id)
        self._rand = rand
        self.token_ttl = token_ttl
        keepalive = min(keepalive, topics.MAX_KEEPALIVE_S)   # what IoT Hub allows
        self.keepalive = keepalive
        self.retry_cap = retry_cap
        params = {"cert_reqs": ssl.CERT_REQUIRED, "cadata": ca_der,
                  "server_hostname": name}
        self.c = _Client(topics.client_id(device_id), host, port,
                         topics.username(name, device_id), keepalive, params, timeout)
        self.state = OFFLINE
        self.attempt = 0
        self.next_try = 0
        self.renew_at = 0
        self.expiry = 0
        # Keep-alive as deadlines, so the idle check only compares (float arithmetic would
        # allocate on every loop turn): PINGREQ due, and PINGRESP expected by (0: none pending).
        self._ping_due = 0
        self._pong_by = 0
        self._broken = None
        self._rid = 0
        self._now = 0
        self.inflight = {}   # pid -> [topic, payload, tag, sent_at or 0, sent before]
        self.stats = {"connects": 0, "connect_failures": 0, "auth_errors": 0, "renewals": 0,
                      "disconnects": 0, "dropped": 0, "bad_topics": 0, "handler_errors": 0,
                      "published": 0, "resent": 0}

    # --- sending (from the loop or from `handle`) ------------------------------------------

    def online(self):
        return self.state == ONLINE and self._broken is None

    def pollable(self):
        # The TLS socket while online: the loop's wait wakes when it is readable, so a PUBACK
        # or C2D is handled at once instead of after the loop's sleep. None when offline.
        return self.c.sock if self.online() else None

    def publish(self, topic, payload, qos=1, tag=None):
        # QoS 1: returns True when queued in flight (re-sent after a reconnect until PUBACKed);
        # a tag already in flight is not sent twice. QoS 0: True when written.
        if qos:
            if tag is not None:
                for e in self.inflight.values():
                    if e[2] == tag:
                        return True
            if len(self.inflight) >= _INFLIGHT_MAX:
                return False
            pid = self._next_pid()
            self.inflight[pid] = [topic, payload, tag, 0, False]
        if not self.online():
            return bool(qos)
        try:
            self.c.publish(topic, payload, qos=qos, pid=pid if qos else 0)
            if qos:
                self.inflight[pid][3:] = [self._now, True]
            self._ping_due = self._now + self.keepalive // 2
            self.stats["published"] += 1
            return True
        except OSError as e:
            self._broken = "publish: " + _reason(e)
            return bool(qos)

    def next_rid(self):
        self._rid += 1
        return str(self._rid)

    def report(self, body):
        # Reported-properties patch (QoS 0; the twin response arrives as a "twin" event with
        # this rid). Returns the rid, or None when it could not be written.
        rid = self.next_rid()
        return rid if self.publish(topics.twin_patch_reported(rid), body, qos=0) else None

    def twin_get(self):
        # Ask for the whole twin (after every connect; again when the hub answered with an
        # error). The answer arrives as a "twin" event. Returns the rid.
        rid = self.next_rid()
        self.publish(topics.twin_get(rid), b" ", qos=0)
        return rid

    def method_response(self, status, rid, body):
        return self.publish(topics.method_response(status, rid), body, qos=0)

    def _next_pid(self):
        c = self.c
        while True:
            c.pid = c.pid % 65535 + 1
            if c.pid not in self.inflight:
                return c.pid

    # --- the loop ---------------------------------------------------------------------------

    def step(self, now, handle):
        self._now = now
        if self.state != ONLINE:
            if now >= self.next_try:
                self._connect(now, handle)
            return
        if now >= self.renew_at:
            # MQTT cannot re-authenticate in session: reconnect with a fresh token.
            self.stats["renewals"] += 1
            self.c.disconnect()
            self._lost(now, "token renewal", handle, 0)
            self._connect(now, handle)
            return
        c = self.c
        try:
            for _ in range(_PACKETS_PER_STEP):
                if self._broken or c.wait_msg() is None:
                    break
            if c.pingresp:
                c.pingresp = False
                self._pong_by = 0
            while c.acked:
                e = self.inflight.pop(c.acked.pop(0), None)
                if e is not None:
                    self._call(handle, ("puback", e[2]))
            while c.inbox and not self._broken:
                topic, msg, pid = c.inbox.pop(0)
                self._dispatch(topic, msg, handle)
                if pid:
                    c.ack(pid)
            if self._broken:
                raise OSError(self._broken)
            if self._pong_by:
                if now > self._pong_by:
                    raise OSError("no PINGRESP")
            elif now >= self._ping_due:
                c.ping()
                self._pong_by = now + self.keepalive
                self._ping_due = now + self.keepalive // 2
            if self.inflight:   # the view alone costs an allocation; idle, nothing is in flight
                for e in self.inflight.values():
                    if e[3] and now - e[3] > self.keepalive:
                        raise OSError("no PUBACK")
        except (OSError, MQTTException, IndexError, MemoryError) as e:
            # MemoryError mid-packet: the stream is out of step, start a fresh connection
            c.close()
            self._lost(now, _reason(e), handle, self._backoff())
        self.stats["dropped"] = c.dropped

    def close(self):
        if self.state == ONLINE:
            self.c.disconnect()
        self.c.close()
        self.state = OFFLINE

    def _call(self, handle, event):
        try:
            handle(event)
        except Exception as e:  # a bad message must never take the device down
            self.stats["handler_errors"] += 1
            print("link: handler failed on", event[0], repr(e))

    def _dispatch(self, topic, msg, handle):
        try:
            t = topic.decode()
            bag = topics.parse_c2d(t, self.device_id)
            if bag is not None:
                return self._call(handle, ("c2d", bag, msg))
            res = topics.parse_twin_response(t)
            if res is not None:
                return self._call(handle, ("twin", res[0], res[1], msg))
            version = topics.parse_desired_patch(t)
            if version is not None:
                return self._call(handle, ("desired", version, msg))
            req = topics.parse_method_request(t)
            if req is not None:
                return self._call(handle, ("method", req[0], req[1], msg))
        except (ValueError, UnicodeError):  # TopicError is a ValueError
            pass
        self.stats["bad_topics"] += 1

    def _backoff(self):
        self.attempt += 1
        return retry.delay(self.attempt - 1, self._rand(), 1, self.retry_cap)

    def _lost(self, now, reason, handle, wait):
        self.state = OFFLINE
        self._broken = None
        self.next_try = now + wait
        self.stats["disconnects"] += 1
        for e in self.inflight.values():
            e[3] = 0          # re-sent (with DUP) after the next connect
        self._call(handle, ("disconnected", reason))

    def _connect(self, now, handle):
        c = self.c
        issued = int(now)
        self.expiry = issued + self.token_ttl
        try:
            c.pswd = sas.token(self._resource, self._key, self.expiry)
            present = c.connect(clean_session=False)
            c.subscribe_all(((topics.c2d_filter(self.device_id), 1), (topics.TWIN_RES_FILTER, 0),
                             (topics.TWIN_DESIRED_FILTER, 0), (topics.METHODS_FILTER, 0)))
        except (MQTTException, sas.SasError) as e:
            c.close()
            code = e.args[0] if isinstance(e, MQTTException) and e.args else 4
            self.stats["connect_failures"] += 1
            kind = retry.classify_connack(code)     # the policy per code lives in retry.py
            self.attempt += 1
            wait = retry.delay_for(kind, self.attempt - 1, self._rand())
            if kind == retry.AUTH:
                self.stats["auth_errors"] += 1
                self.state = AUTH_ERROR
                wait = max(_AUTH_MIN_S, wait)
                self._call(handle, ("auth_error", code, int(wait)))
            else:
                self.state = OFFLINE
            self.next_try = now + wait
            return
        except (OSError, IndexError, MemoryError, ValueError) as e:
            # MemoryError: TLS needs a big block; retry after a collection (and a backoff).
            # ValueError: the TLS layer refusing its parameters ("invalid cert"): retried,
            # never a crash (storage.load_ca already checks the CA at setup).
            c.close()
            gc.collect()
            self.stats["connect_failures"] += 1
            self.state = OFFLINE
            self.next_try = now + self._backoff()
            print("link: connect failed:", _reason(e))
            return
        self.state = ONLINE
        self.attempt = 0
        self._broken = None
        self._pong_by = 0
        self._ping_due = now + self.keepalive // 2
        self.renew_at = sas.renew_at(issued, self.expiry)
        self.stats["connects"] += 1
        try:
            for pid in sorted(self.inflight):
                e = self.inflight[pid]
                c.publish(e[0], e[1], qos=1, pid=pid, dup=e[4])
                self.stats["resent"] += e[4]
                e[3] = now
                e[4] = True
        except OSError as e:
            self._broken = "resend: " + _reason(e)
        self.twin_get()
        self._call(handle, ("connected", present))


def _reason(e):
    a = getattr(e, "args", None)
    return str(a[0]) if a else repr(e)
