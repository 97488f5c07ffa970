# The device's one connection to IoT Hub: MQTT 3.1.1 over TLS, on umqtt.simple.
#
# umqtt.simple (frozen into ESP32 images, so its code costs no RAM) gives Client its
# constructor and fields (client_id, server, port, user, pswd, keepalive, pid, sock),
# ping() and disconnect() (one 2-byte write each) and MQTTException. What it cannot do is
# overridden or added, each with its reason; packets are built and parsed by firmware.iothub.mqtt
# (pure). What the Link adds on top (and why):
# - QoS 1 publish does not wait for PUBACK: message ids are tracked in flight, a PUBACK is
#   reported as an event, unacknowledged messages are re-sent with DUP after a reconnect.
# - reading never blocks the loop: what has arrived is fed to an incremental decoder, and a
#   packet that stays incomplete longer than the socket timeout is a broken connection.
# - incoming PUBLISHes go to a bounded queue (drops are counted, a dropped QoS 1 message is
#   not acknowledged, so the hub delivers it again) and are handled in the loop, never inside
#   a socket read; a QoS 1 message is acknowledged after it was handled (a handler out of
#   memory: not acknowledged, the connection dropped, so the hub delivers it again).
# - SAS token made fresh at every connect and renewed by reconnecting at sas.renew_at();
#   backoff with jitter; CONNACK 4/5 is a separate auth-error state with a long backoff.
# - after every connect: one SUBSCRIBE with the four IoT Hub filters, then a twin GET.
import gc
import socket
import ssl

from umqtt.simple import MQTTClient, MQTTException

from firmware.iothub import mqtt, retry, sas, topics

try:
    from micropython import const
except ImportError:  # CPython (tests)
    def const(x):
        return x

OFFLINE = "offline"
ONLINE = "online"
AUTH_ERROR = "auth_error"
HOST_NOT_FOUND = "host not found"   # the reason of a connect whose host name does not resolve

_BUF_SIZE = const(512)      # one packet up to this size goes out without allocating
_INBOX_MAX = const(8)       # incoming messages waiting for the loop
_INFLIGHT_MAX = const(8)    # QoS 1 publishes waiting for PUBACK
_PACKETS_PER_STEP = const(8)
_AUTH_MIN_S = const(30)     # never more than 2 connects a minute with refused credentials
_IPPROTO_TCP = const(6)     # the same numbers on Linux and lwIP; the unix port names neither
_TCP_NODELAY = const(1)
_MAX_IN = const(16384)      # a bigger incoming message is read past, counted and not kept

# An in-flight QoS 1 publish is a list indexed by these (a list: 96 B each on the 64-bit unix
# port, a class instance with the same five fields 128 B; MicroPython ignores __slots__).
_TOPIC = const(0)           # topic (str)
_BODY = const(1)            # payload
_TAG = const(2)             # the caller's tag, given back in the "puback" event
_SENT_AT = const(3)         # when it was last written, 0 when it waits for a connection
_SENT_BEFORE = const(4)     # written on an earlier connection: the next write carries DUP


class Client(MQTTClient):
    # umqtt.simple's client with single-write packets, reads that never wait mid-packet and a
    # queue for incoming messages. One MQTT/TLS session: the Link keeps one to the hub, DPS
    # registration (firmware/runtime/dps.py) opens its own. What they use: connect(),
    # subscribe_all(), publish(), ack(), wait_for(), check_msg(), inbox, acked, disconnect().

    def __init__(self, client_id, server, port, user, keepalive, ca, hostname, timeout):
        # Only the arguments every umqtt.simple version takes: 1.3.4 has ssl=/ssl_params=,
        # >= 1.6 takes ssl=<SSLContext> and no ssl_params. TLS is done in connect().
        # client_id and user are text (str), as are the topics and filters given later.
        super().__init__(client_id, server, port, user, "", keepalive)
        self.ca = ca              # the trusted roots: a tuple of DER certificates
        self.hostname = hostname  # the TLS server name
        self.ctx = None
        self.timeout = timeout
        self.raw = None
        self._buf = bytearray(_BUF_SIZE)
        self._decoder = mqtt.Decoder(_MAX_IN)
        self._since = 0     # when the packet being read began to arrive
        self.inbox = []     # (topic bytes, payload bytes, pid or 0 for QoS 0)
        self.acked = []     # PUBACKed packet ids, for the Link to report
        self.dropped = 0
        self.pingresp = False

    # --- writing ---------------------------------------------------------------------------

    def connect(self, clean_session=False):
        # Override: TLS is ours (umqtt 1.3.4 and >= 1.6 take different TLS arguments), CONNECT
        # is one write, and TCP, TLS and CONNACK are each bounded by the socket timeout.
        # Returns session present.
        self.close()
        # The TLS context is made at the first attempt, even one that cannot reach the hub: it
        # is one 1728-byte block on a 32-bit port, and an offline spell of retries leaves the
        # heap in pieces; made at the first TCP connect that succeeds, after such a spell, it
        # found no such block and every connect failed with MemoryError (make bench's 32-bit
        # build, firmware frozen: a 28 KiB device that waited 30 s for the hub never got
        # online; made here, 27 KiB does). ValueError (a CA it refuses): a failed connect.
        # One context for every connect: each root goes in with its own load_verify_locations
        # call, since MicroPython's cadata takes ONE DER certificate (certificates back to back:
        # only the first is trusted; PEM: "invalid cert").
        ctx = self.ctx
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED
            for der in self.ca:
                ctx.load_verify_locations(cadata=der)
            self.ctx = ctx
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
            try:
                addr = socket.getaddrinfo(self.server, self.port)[0][-1]
            except (OSError, IndexError):
                raise OSError(HOST_NOT_FOUND)
            raw.connect(addr)
            self.sock = ctx.wrap_socket(raw, server_hostname=self.hostname)
            self.sock.write(mqtt.connect(self._buf, self.client_id.encode(), self.user.encode(),
                                         self.pswd.encode(), self.keepalive, clean_session))
            p = self.wait_for(mqtt.CONNACK)
            if p[2]:
                raise MQTTException(p[2])
            return p[1]
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
        self._decoder.reset()
        self.inbox = []
        self.acked = []
        self.pingresp = False

    def disconnect(self):
        # Override: umqtt's (DISCONNECT, close the TLS socket), then close() for the rest;
        # a connection that is already gone is not an error here.
        try:
            super().disconnect()
        except (OSError, AttributeError):
            pass
        self.close()

    def publish(self, topic, msg, retain=False, qos=0, pid=0, dup=False):
        # Override: one write per packet (umqtt's several small writes cost ~44 ms per QoS 1
        # publish on loopback TLS, one write ~1 ms), the packet id and DUP from the caller, and
        # QoS 1 returns at once (the PUBACK shows up in self.acked). Never retained.
        if isinstance(msg, str):
            msg = msg.encode()
        self.sock.write(mqtt.publish(self._buf, topic.encode(), msg, qos, pid, dup))

    def subscribe_all(self, filters):
        # Instead of umqtt's subscribe() (one filter a packet, three writes, a SUBACK read
        # outside the decoder): one SUBSCRIBE carrying every (filter, qos); waits for its SUBACK
        # (bounded by the socket timeout).
        self.pid = self.pid % 65535 + 1
        subs = []
        for f, qos in filters:
            subs.append((f.encode(), qos))
        self.sock.write(mqtt.subscribe(self._buf, self.pid, subs))
        codes = self.wait_for(mqtt.SUBACK)[2]
        if len(codes) != len(filters) or 0x80 in codes:
            raise OSError("subscription refused")

    def ack(self, pid):
        self.sock.write(mqtt.puback(self._buf, pid))

    # --- reading ---------------------------------------------------------------------------

    def check_msg(self, now):
        # Override: umqtt's reads the rest of a packet blocking (unbounded for a big one) and
        # calls a callback inside the read. This reads what has arrived, without waiting, into
        # the decoder; handles at most one whole packet and returns its kind, None when no
        # whole packet has arrived. A packet still incomplete after the socket timeout
        # (`now` is seconds) is a broken connection.
        d = self._decoder
        sock = self.sock
        sock.setblocking(False)
        try:
            while True:
                data = sock.read(d.want())
                if data is None:
                    break
                if not data:
                    raise OSError("connection closed")
                if not d.busy():
                    self._since = now
                d.feed(data)    # want() never reaches past the packet: all of it is taken
                p = d.take()
                if p is not None:
                    return self._file(p)
        finally:
            self.raw.settimeout(self.timeout)
        if d.busy() and now - self._since > self.timeout:
            raise OSError("incomplete packet")
        return None

    def wait_for(self, kind):
        # Read (blocking, each read bounded by the socket timeout) until a packet of `kind`
        # arrives; what comes before it is handled as usual (a PUBLISH lands in inbox). For
        # request/answer exchanges outside the loop: connecting, DPS registration.
        d = self._decoder
        while True:
            data = self.sock.read(d.want())
            if not data:
                raise OSError("connection closed")
            d.feed(data)
            p = d.take()
            if p is not None and self._file(p) == kind:
                return p

    def _file(self, p):
        # What one incoming packet means for this connection; returns its kind.
        kind = p[0]
        if kind == mqtt.PUBLISH:
            topic, msg, qos, pid = p[1], p[2], p[3], p[4]
            if msg is None:
                # too big to hold (a hostile or broken sender), already read past: it still
                # takes its place in the inbox (body None), so it is acknowledged in its turn
                # (IoT Hub wants PUBACKs in the order of the PUBLISHes) and a twin too large to
                # read is told to the app instead of vanishing
                self.dropped += 1
                self.inbox.append((topic or b"", None, pid if qos == 1 else 0))
            elif qos == 2 or len(self.inbox) >= _INBOX_MAX:
                self.dropped += 1     # not acknowledged: the hub delivers a QoS 1 message again
            else:
                self.inbox.append((topic, msg, pid))
        elif kind == mqtt.PUBACK:
            self.acked.append(p[1])
        elif kind == mqtt.PINGRESP:
            self.pingresp = True
        return kind


class Link:
    # Keeps one device connected. Drive it with step(now, handle) from the main loop;
    # `handle(event)` receives tuples, a request id always right after the kind:
    #   ("connected", session_present)     ("disconnected", reason)
    #   ("auth_error", connack_code, retry_in_s)  ("connect_failed", reason)
    #   ("puback", tag)                    a QoS 1 publish was acknowledged by the hub
    #   ("c2d", props dict, body bytes)    ("twin", rid, status, body bytes)
    #   ("desired", version, body bytes)   ("method", rid, name, body bytes)
    # `now` is Unix seconds; `rand()` returns a float in [0, 1).

    def __init__(self, host, port, device_id, key_b64, ca, rand, token_ttl=3600,
                 keepalive=60, timeout=10, retry_cap=60, hostname=None):
        self.device_id = device_id
        self._key = key_b64
        name = hostname or host    # the hub's name: token resource, user name and TLS name agree
        self._resource = sas.device_resource(name, device_id)
        self._rand = rand
        self.token_ttl = token_ttl
        keepalive = min(keepalive, topics.MAX_KEEPALIVE_S)   # more and IoT Hub drops an idle link
        self.keepalive = keepalive
        self.retry_cap = retry_cap
        if isinstance(ca, (bytes, bytearray)):
            ca = (ca,)        # one DER certificate
        # IoT Hub's MQTT client id is the device id
        self.c = Client(device_id, host, port, topics.username(name, device_id), keepalive, ca,
                        name, timeout)
        self.state = OFFLINE
        self.attempt = 0
        self.next_try = 0
        self.renew_at = 0
        # Keep-alive as deadlines, so the idle check only compares (float arithmetic would
        # allocate on every loop turn): PINGREQ due, and PINGRESP expected by (0: none pending).
        self._ping_due = 0
        self._pong_by = 0
        self._broken = None
        self._more = False      # the last step stopped with packets perhaps still waiting
        self._rid = 0       # the last twin request id
        self._now = 0
        self.inflight = {}   # pid -> [topic, payload, tag, sent_at, sent_before]: see _TOPIC...
        self.stats = {"connects": 0, "connect_failures": 0, "auth_errors": 0, "renewals": 0,
                      "disconnects": 0, "dropped": 0, "bad_topics": 0, "handler_errors": 0,
                      "published": 0, "resent": 0}

    # --- sending (from the loop or from `handle`) ------------------------------------------

    def online(self):
        return self.state == ONLINE and self._broken is None

    def pollable(self):
        # What the loop's wait wakes on while online (None offline), so a PUBACK or C2D is
        # handled at once instead of after the loop's sleep: the TCP socket, a real file
        # descriptor (the unix port polls a TLS object in 1 ms steps: ~1 ms more per PUBACK),
        # or the TLS socket after a step that stopped at _PACKETS_PER_STEP, when packets may
        # wait already decrypted inside TLS, where the TCP socket cannot show them.
        if not self.online():
            return None
        return self.c.sock if self._more else self.c.raw

    def publish(self, topic, payload, qos=1, tag=None):
        # QoS 1: returns True when queued in flight (re-sent after a reconnect until PUBACKed);
        # a tag already in flight is not sent twice. QoS 0: True when written.
        pid = 0
        if qos:
            inflight = self.inflight
            if tag is not None:
                for e in inflight.values():
                    if e[_TAG] == tag:
                        return True
            if len(inflight) >= _INFLIGHT_MAX:
                return False
            c = self.c
            while True:     # umqtt's pid counter, wrapped within 1..65535 and past ids in flight
                c.pid = c.pid % 65535 + 1
                if c.pid not in inflight:
                    break
            pid = c.pid
            inflight[pid] = [topic, payload, tag, 0, False]
        if not self.online():
            return bool(qos)
        try:
            self.c.publish(topic, payload, qos=qos, pid=pid)
            if qos:
                e = self.inflight[pid]
                e[_SENT_AT] = self._now
                e[_SENT_BEFORE] = True
            self._ping_due = self._now + self.keepalive // 2
            self.stats["published"] += 1
            return True
        except OSError as e:
            self._broken = "publish: " + _reason(e)
            return bool(qos)

    def report(self, body):
        # Reported-properties patch (QoS 0; the twin response arrives as a "twin" event with
        # this rid). Returns the rid, or None when it could not be written.
        self._rid += 1
        rid = str(self._rid)
        return rid if self.publish(topics.twin_patch_reported(rid), body, qos=0) else None

    def twin_get(self):
        # Ask for the whole twin (after every connect; again when the hub answered with an
        # error). The answer arrives as a "twin" event. Returns the rid.
        self._rid += 1
        rid = str(self._rid)
        self.publish(topics.twin_get(rid), b" ", qos=0)
        return rid

    def method_response(self, rid, status, body):
        return self.publish(topics.method_response(rid, status), body, qos=0)

    # --- the loop ---------------------------------------------------------------------------

    def connect_due(self, now):
        # True when step(now) would try to connect: the loop checks the network first.
        return self.state != ONLINE and now >= self.next_try

    def network_down(self, now, wait):
        # The network itself is down (no WLAN): no connect attempt before now + wait seconds.
        self.next_try = now + wait

    def retry_at(self, t):
        # The next connect attempt at t, whatever the backoff said (the clock was just fixed).
        self.next_try = t

    def step(self, now, handle):
        self._now = now
        if self.state != ONLINE:
            if now >= self.next_try:
                self._connect(now, handle)
            return
        c = self.c
        if now >= self.renew_at:
            # MQTT cannot re-authenticate in session: reconnect with a fresh token.
            self.stats["renewals"] += 1
            c.disconnect()
            self._lost(now, "token renewal", handle, 0)
            self._connect(now, handle)
            return
        try:
            self._receive(now, handle)
            # Keep-alive: PINGREQ after keepalive/2 without writing; no PINGRESP within
            # keepalive: broken.
            if self._pong_by:
                if now > self._pong_by:
                    raise OSError("no PINGRESP")
            elif now >= self._ping_due:
                c.ping()
                self._pong_by = now + self.keepalive
                self._ping_due = now + self.keepalive // 2
            # A publish without its PUBACK within keepalive: the connection is not working.
            if self.inflight:   # the view alone costs an allocation; idle, nothing is in flight
                for e in self.inflight.values():
                    if e[_SENT_AT] and now - e[_SENT_AT] > self.keepalive:
                        raise OSError("no PUBACK")
        except (OSError, ValueError, IndexError, MemoryError) as e:
            # ValueError: a malformed packet. MemoryError mid-packet: the stream is out of step,
            # start a fresh connection
            c.close()
            self._lost(now, _reason(e), handle, self._backoff())
        self.stats["dropped"] = c.dropped

    def close(self):
        if self.state == ONLINE:
            self.c.disconnect()
        self.c.close()
        self.state = OFFLINE

    def _receive(self, now, handle):
        # Up to _PACKETS_PER_STEP whole packets, then what they carried: PUBACKs become events,
        # messages are handled and then acknowledged. Raises OSError when the link broke.
        c = self.c
        self._more = True
        for _ in range(_PACKETS_PER_STEP):
            if len(c.inbox) >= _INBOX_MAX:
                break           # the rest waits in the socket: nothing dropped, acks stay in order
            if self._broken or c.check_msg(now) is None:
                self._more = False
                break
        if c.pingresp:
            c.pingresp = False
            self._pong_by = 0
        while c.acked:
            e = self.inflight.pop(c.acked.pop(0), None)
            if e is not None:
                self._call(handle, ("puback", e[_TAG]))
        while c.inbox and not self._broken:
            topic, msg, pid = c.inbox.pop(0)
            # A handler failing on a message (a bug, bad content) loses that message:
            # acknowledged all the same, a poison message must not block the queue. Out of
            # memory is the device's state, not the message's: a C2D is not acknowledged and
            # the connection dropped (lost, with backoff; PUBACKs go in order, so the messages
            # after it in this read are not acknowledged either): the hub delivers them again
            # when their lock expires (IoT Hub: 1 min). A twin answer or desired patch: dropped
            # too, the twin GET after the reconnect brings the whole twin. A method (not
            # delivered again) answers 500 and stays online; when even that fails, the link
            # drops as for any write error.
            ev = self._event(topic, msg)
            if ev and not self._call(handle, ev):
                if ev[0] == "method":
                    self.method_response(ev[1], 500, b"null")
                else:
                    self._broken = "handler out of memory"
            if pid and not self._broken:    # broken: this one and the rest come again
                c.ack(pid)
        if self._broken:
            raise OSError(self._broken)

    def _call(self, handle, event):
        # False when the handler ran out of memory (after a collection), else True
        try:
            handle(event)
        except MemoryError:
            gc.collect()
            self.stats["handler_errors"] += 1
            return False
        except Exception as e:  # a bad message must never take the device down
            self.stats["handler_errors"] += 1
            print("link: handler failed on", event[0], repr(e))
        return True

    def _event(self, topic, msg):
        # The event for one message, None for none. msg None: a message too large to read;
        # only the twin's are told (body None), as the app must report them
        try:
            t = topic.decode()
            bag = topics.parse_c2d(t, self.device_id)
            if bag is not None:
                return None if msg is None else ("c2d", bag, msg)
            res = topics.parse_twin_response(t)
            if res is not None:
                return ("twin", res[1], res[0], msg)
            version = topics.parse_desired_patch(t)
            if version is not None:
                return ("desired", version, msg)
            req = topics.parse_method_request(t)
            if req is not None:
                return None if msg is None else ("method", req[1], req[0], msg)
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
            e[_SENT_AT] = 0     # re-sent (with DUP) after the next connect
        self._call(handle, ("disconnected", reason))

    # --- connecting -------------------------------------------------------------------------

    def _connect(self, now, handle):
        # TCP + TLS + CONNECT with a fresh token + SUBSCRIBE, then what was in flight and a
        # twin GET.
        c = self.c
        stats = self.stats
        issued = int(now)
        expiry = issued + self.token_ttl
        try:
            c.pswd = sas.token(self._resource, self._key, expiry)
            present = c.connect(clean_session=False)
            c.subscribe_all(((topics.c2d_filter(self.device_id), 1), (topics.TWIN_RES_FILTER, 0),
                             (topics.TWIN_DESIRED_FILTER, 0), (topics.METHODS_FILTER, 0)))
        except (MQTTException, sas.SasError) as e:
            # The hub answered CONNACK with an error code (or the key cannot make a token):
            # wait as retry.py says for that code; refused credentials are the auth_error state.
            c.close()
            code = e.args[0] if isinstance(e, MQTTException) and e.args else 4
            stats["connect_failures"] += 1
            kind = retry.classify_connack(code)     # the policy per code lives in retry.py
            self.attempt += 1
            wait = retry.delay_for(kind, self.attempt - 1, self._rand())
            if kind == retry.AUTH:
                stats["auth_errors"] += 1
                self.state = AUTH_ERROR
                wait = max(_AUTH_MIN_S, wait)
                self._call(handle, ("auth_error", code, int(wait)))
            else:
                self.state = OFFLINE
            self.next_try = now + wait
            return
        except (OSError, IndexError, MemoryError, ValueError) as e:
            # No answer (network, TLS, memory): back off and try again. MemoryError: TLS needs
            # a big block; retry after a collection (and a backoff). ValueError: the TLS layer
            # refusing its parameters ("invalid cert") or a malformed answer: retried, never a
            # crash (storage.load_ca already checks the CA at setup). Expected while the hub or
            # the network is away: an event, never a console error.
            c.close()
            gc.collect()
            stats["connect_failures"] += 1
            self.state = OFFLINE
            self.next_try = now + self._backoff()
            self._call(handle, ("connect_failed", _reason(e)))
            return
        self.state = ONLINE
        self.attempt = 0
        self._broken = None
        self._more = True       # connecting may have left packets decrypted inside TLS
        self._pong_by = 0
        self._ping_due = now + self.keepalive // 2
        self.renew_at = sas.renew_at(issued, expiry)
        stats["connects"] += 1
        # What is still in flight goes out again (DUP if it was sent before), oldest id first,
        # then a twin GET: the app reconciles with the whole twin after every connect.
        try:
            for pid in sorted(self.inflight):
                e = self.inflight[pid]
                c.publish(e[_TOPIC], e[_BODY], qos=1, pid=pid, dup=e[_SENT_BEFORE])
                stats["resent"] += e[_SENT_BEFORE]
                e[_SENT_AT] = now
                e[_SENT_BEFORE] = True
        except OSError as e:
            self._broken = "resend: " + _reason(e)
        self.twin_get()
        self._call(handle, ("connected", present))


def _reason(e):
    a = getattr(e, "args", None)
    return str(a[0]) if a else repr(e)
