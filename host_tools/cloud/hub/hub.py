"""The local IoT Hub: device side (MQTT over TLS via amqtt) and service side (HTTPS JSON API).

Hub owns the store, the live device connections and the pending direct-method calls; both
listeners run in one asyncio loop. `run()` is what `python -m host_tools hub` calls.
"""
import asyncio
import itertools
import json
import logging
import os
import signal
import sys
import time
import uuid

from firmware.iothub import sas
from host_tools.cloud.hub import certs, topics, twin_rules
from host_tools.files import load_json, make_dirs, read_json, remove_dirs, write_json
from host_tools.cloud.hub.faults import Faults
from host_tools.cloud.hub.packets import MAX_IDLE_SECONDS
from host_tools.cloud.hub.store import C2D_LOCK_SECONDS, Store, StoreError, new_key
from host_tools.cloud import tokens

log = logging.getLogger("host_tools.cloud.hub")

POLICY = "iothubowner"
HOST_NAMES = ("127.0.0.1", "localhost")


class HubError(Exception):
    """A service request that fails with an HTTP status (404 device offline, 504 timeout...)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def data_paths(data_dir):
    return {
        "db": os.path.join(data_dir, "hub.sqlite3"),
        "certs": os.path.join(data_dir, "certs"),
        "service": os.path.join(data_dir, "service.json"),
        "hub": os.path.join(data_dir, "hub.json"),
        "lock": os.path.join(data_dir, "hub.lock"),
        "dps": os.path.join(data_dir, "dps.sqlite3"),
    }


def ensure_data_dir(data_dir):
    """Create the data folder, its certificates, the service key and the database when missing.

    What exists is checked first (the database opens, the certificates are whole, service.json
    is readable), so a folder that cannot be used raises HubError or StoreError and is left
    exactly as it was; only commands that make a hub call this (registry add, hub, provision)."""
    created = make_dirs(data_dir, "hub data folder", 0o700)
    p = data_paths(data_dir)
    store = None
    try:
        if os.path.exists(p["db"]):
            store = Store(p["db"])          # a damaged database fails here, before anything is made
        try:
            cert_paths, _ = certs.ensure(p["certs"])
        except certs.CertsError as exc:
            raise HubError(0, str(exc)) from None
        if os.path.lexists(p["service"]):
            _service(p["service"])
        else:
            write_json(p["service"], {"policy": POLICY, "key": new_key()}, mode=0o600)
        if store is None:
            store = Store(p["db"])
    except BaseException:
        remove_dirs(created)
        raise
    finally:
        if store is not None:
            store.close()
    return p, cert_paths


def _service(path):
    """service.json: the service policy's key; HubError when it is not readable."""
    obj = load_json(path, "service key file", lambda m: HubError(0, m + "; move it away to make a new key"))
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        raise HubError(0, "%s has no service key; move it away to make a new key" % path)
    return obj


def _filter_matches(topic_filter, topic):
    f, t = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


MAX_SUBSCRIPTIONS = 5   # IoT Hub: "A device can only subscribe to five topics at a time"
C2D_IN_FLIGHT = 16      # C2D messages delivered and not yet completed, per connection


class _InFlight:
    __slots__ = ("seq", "topic", "body", "lock_until")

    def __init__(self, seq, topic, body, lock_until):
        self.seq, self.topic, self.body, self.lock_until = seq, topic, body, lock_until


class Connection:
    """One authenticated MQTT connection of a device."""
    registry = True   # a device of the hub (a DPS connection is not: host_tools/cloud/dps)

    def __init__(self, hub, device_id, expiry, clean_session):
        self.hub = hub
        self.device_id = device_id
        self.expiry = expiry
        self.clean_session = clean_session
        self.handler = None
        self.session_present = False
        self.subscriptions = set()
        self.closing = False
        self.closed_event = asyncio.Event()
        self.finished = asyncio.Event()
        self.c2d_wakeup = asyncio.Event()
        self.inflight = {}  # packet id -> _InFlight, in the order the PUBLISHes went out
        self._next_pid = 0
        self._tasks = []
        self._expiry_timer = None

    def close(self, reason):
        if not self.closing:
            self.closing = True
            log.info("%s: closing connection (%s)", self.device_id, reason)
            self.closed_event.set()

    def started(self):
        delay = max(0.0, self.expiry - time.time())
        self._expiry_timer = asyncio.get_running_loop().call_later(delay, self.close, "token expired")
        self._tasks.append(asyncio.ensure_future(self._c2d_pump()))

    def stop(self):
        if self._expiry_timer:
            self._expiry_timer.cancel()
        for t in self._tasks:
            t.cancel()

    def subscribed(self, topic):
        return any(_filter_matches(f, topic) for f in self.subscriptions)

    async def send(self, topic, body, qos=0):
        if self.closing or not self.subscribed(topic):
            return False
        await self.handler.mqtt_publish(topic, body, qos, retain=False)
        return True

    # ---- from the protocol handler ------------------------------------------------------
    def on_subscribe(self, requested):
        for topic_filter, _qos in requested:
            if not topics.allowed_filter(topic_filter, self.device_id):
                self.close("subscribe to a topic it may not use: %s" % topic_filter)
                return None
        wanted = self.subscriptions | {f for f, _ in requested}
        if len(wanted) > MAX_SUBSCRIPTIONS:
            self.close("more than %d subscriptions" % MAX_SUBSCRIPTIONS)
            return None
        self.subscriptions = wanted
        if not self.clean_session:
            self.hub.store.set_subscriptions(self.device_id, self.subscriptions)
        return [min(q, 1) for _, q in requested]

    def after_subscribe(self):
        self.c2d_wakeup.set()

    def on_unsubscribe(self, filters):
        self.subscriptions.difference_update(filters)
        if not self.clean_session:
            self.hub.store.set_subscriptions(self.device_id, self.subscriptions)

    def on_puback(self, packet_id):
        """A C2D message completed. IoT Hub requires PUBACKs in the order of the PUBLISHes; one out
        of order, or for nothing in flight, closes the connection and completes nothing."""
        if not self.inflight:
            return self.close("PUBACK %d for no message in flight" % packet_id)
        first = next(iter(self.inflight))
        if packet_id != first:
            return self.close("PUBACK %d out of order: %d was published first" % (packet_id, first))
        entry = self.inflight.pop(first)
        if self.hub.faults.take("c2d_lock"):
            # the PUBACK is "lost": the message stays locked and comes back when the lock expires
            log.info("%s: injected fault: PUBACK for C2D %d lost", self.device_id, entry.seq)
        else:
            self.hub.store.complete_c2d(entry.seq)
        self.c2d_wakeup.set()

    async def on_publish(self, topic, data, retain=False):
        """Route one device publish: True when it is handled, a future when it is handled once
        that future is done (telemetry: its group commit), False (and the connection closing)
        when it breaks the rules."""
        try:
            kind = topics.parse_publish(topic, self.device_id)
        except topics.TopicError as exc:
            self.close("malformed topic: %s" % exc)
            return False
        if kind is None:
            self.close("publish to a topic it may not use: %s" % topic)
            return False
        try:
            if kind[0] == "telemetry":
                bag = kind[1]
                if retain:  # IoT Hub does not store it: it marks the message and passes it on
                    bag = dict(bag, **{"mqtt-retain": "true"})
                # PUBACK only once the batch holding it is committed (group_commit.py); the
                # caller reads on meanwhile and sends the PUBACKs in order (broker.py)
                return self.hub.record_telemetry(self.device_id, bag, data)
            elif kind[0] == "twin_get":
                await self._twin_get(kind[1])
            elif kind[0] == "twin_reported":
                await self._twin_reported(kind[1], data)
            elif kind[0] == "method_res":
                self.hub.method_response(self.device_id, kind[2], kind[1], data)
        except Exception:
            log.exception("%s: failed to handle a publish on %s", self.device_id, topic)
            self.close("internal error")
            return False
        return True

    async def _twin_get(self, rid):
        status = self.hub.faults.take("twin_get")
        if status:
            log.info("%s: injected fault: twin GET answered %d", self.device_id, status)
            await self.send(topics.twin_response(status, rid), b"")
            return
        twin = self.hub.store.get_twin(self.device_id)
        doc = {"desired": dict(twin["desired"], **{"$version": twin["desired_version"]}),
               "reported": dict(twin["reported"], **{"$version": twin["reported_version"]})}
        await self.send(topics.twin_response(200, rid), json.dumps(doc).encode())

    async def _twin_reported(self, rid, data):
        status = self.hub.faults.take("twin_patch")
        if status:
            log.info("%s: injected fault: reported PATCH answered %d", self.device_id, status)
            await self.send(topics.twin_response(status, rid), b"")
            return
        try:
            patch = json.loads(data.decode() or "null")
            version = self.hub.store.patch_twin(self.device_id, "reported", patch)
        except (ValueError, UnicodeDecodeError, RecursionError, StoreError) as exc:
            log.info("%s: reported PATCH refused (400): %s", self.device_id, exc)
            await self.send(topics.twin_response(400, rid), b"")
            return
        await self.send(topics.twin_response(204, rid, version), b"")

    # ---- C2D ------------------------------------------------------------------------------
    def _packet_id(self):
        while True:
            self._next_pid = self._next_pid % 65535 + 1
            if self._next_pid not in self.inflight:
                return self._next_pid

    async def _c2d_pump(self):
        """Deliver C2D messages as IoT Hub does over MQTT: each delivery locks the message for the
        lock time; several may be in flight; a PUBACK completes one; a lock that expires before
        its PUBACK makes the message visible again: re-sent (DUP) on this connection, or delivered
        after a reconnect. Lock expiry is not an abandon: the delivery count does not grow, and
        the message keeps coming back until its TTL."""
        try:
            await self._c2d_deliver()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dead pump would leave the device without its messages
            log.exception("%s: C2D delivery failed", self.device_id)
            self.close("C2D delivery failed: %r" % exc)

    async def _c2d_deliver(self):
        store, lock = self.hub.store, self.hub.c2d_lock_seconds
        while not self.closing:
            now = time.time()
            for pid, entry in list(self.inflight.items()):
                if entry.lock_until <= now and pid in self.inflight:
                    entry.lock_until = now + lock
                    if store.lock_c2d(entry.seq, entry.lock_until):
                        log.info("%s: C2D %d lock expired; sent again", self.device_id, entry.seq)
                        await self.handler.send_publish(entry.topic, entry.body, pid, dup=True)
            c2d_subscribed = any(topics.is_c2d_filter(f, self.device_id) for f in self.subscriptions)
            room = C2D_IN_FLIGHT - len(self.inflight)
            if c2d_subscribed and room > 0:
                held = {e.seq for e in self.inflight.values()}
                for seq, props, body in store.visible_c2d(self.device_id, exclude=held, limit=room):
                    if self.closing:
                        return
                    until = time.time() + lock
                    if not store.lock_c2d(seq, until):
                        continue
                    pid = self._packet_id()
                    entry = _InFlight(seq, topics.c2d(self.device_id, props), body, until)
                    self.inflight[pid] = entry
                    await self.handler.send_publish(entry.topic, body, pid)
            wake = [e.lock_until for e in self.inflight.values()]
            if c2d_subscribed:
                unlock = store.next_c2d_unlock(self.device_id)
                if unlock is not None:
                    wake.append(unlock)
            timeout = max(0.0, min(wake) - time.time()) + 0.01 if wake else None
            self.c2d_wakeup.clear()
            try:
                await asyncio.wait_for(self.c2d_wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass


class Hub:
    def __init__(self, data_dir, host="127.0.0.1", connect_timeout=10.0, dps_retry_after=None,
                 c2d_lock_seconds=C2D_LOCK_SECONDS, max_idle=MAX_IDLE_SECONDS, inject=(),
                 retention_hours=None, feedback_batch_seconds=None, feedback_lock_seconds=None):
        from host_tools.cloud.dps.service import DEFAULT_RETRY_AFTER, Dps
        self.data_dir = data_dir
        self.host = host
        self.c2d_lock_seconds = c2d_lock_seconds
        self.max_idle = max_idle
        self.retention_hours = retention_hours            # None: as stored, else IoT Hub's default
        self.feedback_batch_seconds = feedback_batch_seconds  # None: IoT Hub's 15 s
        self.feedback_lock_seconds = feedback_lock_seconds    # None: IoT Hub's 60 s
        self.faults = Faults()
        for spec in inject:
            self.faults.arm_spec(spec)
        self.paths, self.cert_paths = ensure_data_dir(data_dir)
        self.service = _service(self.paths["service"])
        self.store = Store(self.paths["db"])
        self.dps = Dps(self, self.paths["dps"], DEFAULT_RETRY_AFTER if dps_retry_after is None else dps_retry_after)
        self.connect_timeout = connect_timeout
        self.connections = {}
        self._methods = {}
        self._rids = itertools.count(1)
        self.broker = None
        self.api_server = None
        self.mqtt_port = self.api_port = None
        self.amqp = None            # the AMQP 1.0 service endpoints (amqp/server.py)
        self.amqp_port = None
        self.partitions = None      # of the Event Hubs-compatible endpoint, once started

    # ---- life cycle -----------------------------------------------------------------------
    async def start(self, mqtt_port=8883, api_port=443, amqp_port=5671, partitions=None):
        from host_tools.cloud.hub.broker import HubBroker
        from host_tools.cloud.hub.http_server import serve
        from host_tools.cloud.hub.service_api import ServiceApi

        listener = {"type": "tcp", "bind": "%s:%d" % (self.host, mqtt_port), "ssl": True,
                    "certfile": self.cert_paths["server.pem"], "keyfile": self.cert_paths["server.key"]}
        from amqtt.errors import BrokerError
        self._lock = _take_lock(self.paths["lock"])
        if self._lock is None:
            other = _pid(self.paths["hub"])
            raise HubError(0, "a hub is already running for %s%s" % (
                self.data_dir, " (pid %d)" % other if other else ""))
        broker = HubBroker(self, {"listeners": {"default": listener}, "plugins": {}},
                           connect_timeout=self.connect_timeout, max_idle=self.max_idle)
        try:
            await broker.start()
        except BrokerError as exc:
            raise HubError(0, "cannot listen for MQTT on %s:%d (%s); port taken? --mqtt-port 0 picks a free one"
                           % (self.host, mqtt_port, getattr(exc.__cause__, "strerror", None) or exc)) from None
        self.broker = broker
        self.mqtt_port = self.broker.port()
        try:
            self.api_server = await serve(ServiceApi(self).handle, self.host, api_port, self._ssl_context())
        except OSError as exc:
            raise HubError(0, "cannot listen for HTTPS on %s:%d (%s); port taken? --api-port 0 picks a free one"
                           % (self.host, api_port, exc.strerror)) from None
        self.api_port = self.api_server.port
        await self._start_amqp(amqp_port, partitions)
        info = {"host": self.host, "mqtt_port": self.mqtt_port, "api_port": self.api_port,
                "amqp_port": self.amqp_port, "pid": os.getpid()}
        write_json(self.paths["hub"], info)
        self._wrote_info = True
        return info

    async def _start_amqp(self, port, partitions):
        from host_tools.cloud.hub.amqp import config
        from host_tools.cloud.hub.amqp.server import AmqpServer
        from host_tools.cloud.hub.amqp import feedback
        try:
            eventhub = config.ensure(self.data_dir, partitions, retention_hours=self.retention_hours)
        except config.ConfigError as exc:
            raise HubError(0, str(exc)) from None
        self.partitions = eventhub["partitions"]
        window = feedback.BATCH_SECONDS if self.feedback_batch_seconds is None else self.feedback_batch_seconds
        lock = feedback.LOCK_SECONDS if self.feedback_lock_seconds is None else self.feedback_lock_seconds
        self.amqp = AmqpServer(self, eventhub, feedback_window=window, feedback_lock=lock)
        try:
            self.amqp_port = await self.amqp.start(self.host, port, self._ssl_context())
        except OSError as exc:
            raise HubError(0, "cannot listen for AMQP on %s:%d (%s); port taken? --amqp-port 0 picks a free one"
                           % (self.host, port, exc.strerror)) from None

    async def stop(self):
        if self.amqp is not None:
            await self.amqp.stop()
        if getattr(self, "_wrote_info", False):
            try:
                os.remove(self.paths["hub"])
            except FileNotFoundError:
                pass
        if self.api_server is not None:
            await self.api_server.close()   # requests in flight get a moment, then end quietly
        for conn in list(self.connections.values()):
            conn.close("hub stopping")
        if self.broker is not None:
            for conn in list(self.connections.values()):
                try:
                    await asyncio.wait_for(conn.finished.wait(), 5)
                except asyncio.TimeoutError:
                    pass
            await self.broker.shutdown()
        self.store.close()
        self.dps.close()
        if getattr(self, "_lock", None) is not None:
            os.close(self._lock)      # the kernel would release it at exit, even after SIGKILL
            self._lock = None

    def _ssl_context(self):
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_paths["server.pem"], self.cert_paths["server.key"])
        return ctx

    # ---- device connections ---------------------------------------------------------------
    def authenticate(self, session):
        """CONNECT -> Connection, or the CONNACK code that refuses it (5; 3 when injected).
        Never logs the token."""
        device_id = session.client_id or ""
        code = self.faults.take("connect")
        if code:
            log.info("%s: injected fault: CONNACK %d", device_id, code)
            return code
        conn = self._authenticate(session, device_id)
        return 5 if conn is None else conn

    def _authenticate(self, session, device_id):
        username = session.username or ""
        try:
            kind, host, user_device, _ = topics.parse_username(username)
        except topics.TopicError:
            kind = user_device = None
        if kind == "dps":
            return self.dps.authenticate(session, host, user_device)   # same listener: host is the id scope
        if kind != "hub" or user_device != device_id:
            log.info("%s: refused, username does not match {host}/{deviceId}/?api-version=...", device_id)
            return None
        if host.lower() not in self.host_names():
            log.info("%s: refused, username names another hub (%s)", device_id, host)
            return None
        dev = self.store.get_device(device_id)
        if dev is None or dev["status"] != "enabled":
            log.info("%s: refused, device %s", device_id, "unknown" if dev is None else "disabled")
            return None
        resource = sas.device_resource(host, device_id)
        token = session.password or ""
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        now = time.time()
        claims, reason = None, "no token"
        for key in (dev["primary_key"], dev["secondary_key"]):
            try:
                claims = tokens.check(token, key, now, resource_uri=resource)
                break
            except sas.SasError as exc:
                reason = str(exc)
        if claims is None or claims.get("skn"):
            log.info("%s: refused, %s", device_id, reason if claims is None else "policy token")
            return None
        return Connection(self, device_id, claims["se"], bool(session.clean_session))

    def host_names(self):
        return {self.host.lower(), *HOST_NAMES}

    async def attach(self, conn):
        if not conn.registry:
            return
        old = self.connections.get(conn.device_id)
        if old is not None:
            old.close("another connection with the same device id")
            try:
                await asyncio.wait_for(old.finished.wait(), 5)
            except asyncio.TimeoutError:
                log.warning("%s: old connection did not finish in time", conn.device_id)
        if conn.clean_session:
            # CleanSession=1: no persistent session; queued C2D messages are dropped
            self.store.set_subscriptions(conn.device_id, ())
            self.store.purge_c2d(conn.device_id)
        else:
            conn.subscriptions = self.store.subscriptions(conn.device_id)
            conn.session_present = bool(conn.subscriptions)
        self.connections[conn.device_id] = conn
        log.info("%s: connected", conn.device_id)

    async def detach(self, conn):
        conn.closing = True
        conn.stop()
        if conn.registry and self.connections.get(conn.device_id) is conn:
            del self.connections[conn.device_id]
            log.info("%s: disconnected", conn.device_id)
        # a method call in flight to this device is left to time out (504), as with IoT Hub

    def kick(self, device_id, reason):
        conn = self.connections.get(device_id)
        if conn is not None:
            conn.close(reason)

    # ---- telemetry ------------------------------------------------------------------------
    def record_telemetry(self, device_id, bag, body):
        """Store telemetry in the group commit; returns a future done once it is durable (then,
        and only then, readers of the Event Hubs-compatible endpoint are woken)."""
        system, app, partition = self._event(device_id, bag)
        durable = self.store.add_event_grouped(device_id, system, app, body, partition=partition)
        durable.add_done_callback(lambda f: not f.cancelled() and f.exception() is None
                                  and self.amqp is not None and self.amqp.telemetry())
        return durable

    def _event(self, device_id, bag):
        system, app = topics.split_properties(bag)
        partition = None
        if self.partitions:
            from host_tools.cloud.hub.amqp.rules import partition_of
            partition = partition_of(device_id, self.partitions)
        return system, app, partition

    # ---- C2D ------------------------------------------------------------------------------
    def send_c2d_grouped(self, device_id, body, message_id=None, correlation_id=None, content_type=None,
                         content_encoding=None, properties=None, ttl=None, ack=None):
        """Queue a C2D message in the group commit: (message id, future done once it is durable,
        or failed with StoreError when the queue refuses it). StoreError at once for an unknown
        device. Accept the sender's message only once the future is done; the device is sent
        the message only then, too (the C2D pump reads committed messages only)."""
        self.store.require_device(device_id)
        props = [("$.mid", message_id or str(uuid.uuid4())),
                 ("$.to", "/devices/%s/messages/deviceBound" % device_id)]
        for key, value in (("$.cid", correlation_id), ("$.ct", content_type), ("$.ce", content_encoding),
                           ("iothub-ack", ack)):
            if value is not None:
                props.append((key, value))
        for key, value in (properties or {}).items():
            props.append((key, value))
        durable = self.store.enqueue_c2d_grouped(device_id, body, props, ttl=ttl)

        def wake(f):
            conn = self.connections.get(device_id)
            if conn is not None and not f.cancelled() and f.exception() is None:
                conn.c2d_wakeup.set()
        durable.add_done_callback(wake)
        return props[0][1], durable

    # ---- twins ----------------------------------------------------------------------------
    async def update_desired(self, device_id, patch):
        version = self.store.patch_twin(device_id, "desired", patch)
        conn = self.connections.get(device_id)
        if conn is not None:
            body = dict(twin_rules.strip_read_only(patch), **{"$version": version})
            await conn.send(topics.desired_patch(version), json.dumps(body).encode())
        return version

    # ---- direct methods -------------------------------------------------------------------
    async def invoke_method(self, device_id, name, payload, timeout=30):
        self.store.require_device(device_id)
        conn = self.connections.get(device_id)
        topic = topics.method_request(name, "0")
        if conn is None or conn.closing or not conn.subscribed(topic):
            raise HubError(404, "device %s is not connected (or not listening for methods)" % device_id)
        rid = "%x" % next(self._rids)
        fut = asyncio.get_running_loop().create_future()
        self._methods[(device_id, rid)] = fut
        try:
            await conn.send(topics.method_request(name, rid), json.dumps(payload).encode())
            status, body = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise HubError(504, "device %s did not answer %s within %ss" % (device_id, name, timeout)) from None
        finally:
            self._methods.pop((device_id, rid), None)
        text = body.decode("utf-8", "replace").strip()
        try:
            result = json.loads(text) if text else None
        except ValueError:
            result = text
        return {"status": status, "payload": result}

    def method_response(self, device_id, rid, status, body):
        fut = self._methods.get((device_id, rid))
        if fut is not None and not fut.done():
            fut.set_result((status, body))

    # ---- service auth ---------------------------------------------------------------------
    def check_service_token(self, token):
        """Raise HubError(401) unless `token` is a live iothubowner token for this hub."""
        if not token:
            raise HubError(401, "missing Authorization (a SharedAccessSignature for iothubowner)")
        try:
            claims = tokens.check(token, self.service["key"], time.time())
        except sas.SasError as exc:
            raise HubError(401, "unauthorized: %s" % exc) from None
        host = claims["sr"].split("/")[0]
        if ":" in host:
            host = host.rsplit(":", 1)[0]  # the connection string's HostName may carry a port
        if claims.get("skn") != self.service.get("policy", POLICY) or host.lower() not in self.host_names():
            raise HubError(401, "unauthorized: token is not for %s on this hub" % POLICY)


def _take_lock(path):
    """An exclusive lock on `path` held for the hub's lifetime (an fd), or None when another
    live hub holds it. The kernel drops it when the process ends however it ends, so a hub
    killed with SIGKILL never leaves a stale claim behind (a PID file can: a zombie, a reused pid)."""
    import fcntl
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _pid(hub_json):
    try:
        return int(read_json(hub_json)["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


async def run(data_dir, host="127.0.0.1", mqtt_port=8883, api_port=443, out=sys.stdout,
              connect_timeout=10.0, amqp_port=5671, partitions=None, say=None, **options):
    """Run the hub in the foreground until SIGINT/SIGTERM. options: dps_retry_after,
    c2d_lock_seconds, max_idle, inject (fault specs, see faults.py), retention_hours,
    feedback_batch_seconds, feedback_lock_seconds.

    Ready: one JSON line on `out` (for programs) and, with `say` (a text stream), a sentence."""
    hub = Hub(data_dir, host, connect_timeout=connect_timeout, **options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        info = await hub.start(mqtt_port, api_port, amqp_port, partitions)  # HubError when a port is taken
        out.write(json.dumps({"host": info["host"], "mqtt_port": info["mqtt_port"],
                              "api_port": info["api_port"], "amqp_port": info["amqp_port"]}) + "\n")
        out.flush()
        if say is not None:
            say.write("hub: ready. Devices: MQTT over TLS on %s:%d; service API: https://%s:%d; "
                      "service AMQP (C2D, telemetry): amqps://%s:%d; data in %s. Ctrl-C stops.\n"
                      % (info["host"], info["mqtt_port"], info["host"], info["api_port"], info["host"],
                         info["amqp_port"], os.path.abspath(data_dir)))
            say.flush()
        await stop.wait()
    finally:
        await hub.stop()
