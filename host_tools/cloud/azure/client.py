"""The order service's hub, over Azure's own protocols (works against IoT Hub and the local hub).

    hub = AzureHub(settings)
    hub.start({"0": 41, "1": -1})          # last handled sequence number per partition
    events, cursors = hub.next_events(1.0) # what arrived, and the cursors after it
    hub.send_c2d([C2d(...), ...])          # pipelined; one result per message (None = accepted)

Telemetry: azure-eventhub's EventHubConsumerClient.receive_batch in a thread, from the
service's own checkpoints (sequence numbers, exclusive), into a queue. Nothing here commits:
the caller stores the cursors with the orders they produced, so events fetched but not yet
committed are simply read again after a restart.

C2D: one AMQP connection with python-qpid-proton as the client, as IoT Hub's service side
expects it (SAS token on $cbs for https://{HostName}, a sender link to /messages/devicebound);
a batch of messages goes out pipelined and each message's own outcome is read, so queue full
(403), throttled (429) and device not found (404) are told apart. The README says why this is
not azure-iot-hub's send_c2d_message (which is tested against the local hub on its own).
"""
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from firmware.iothub import sas

log = logging.getLogger("host_tools.cloud.azure")

DEVICE_ID = b"iothub-connection-device-id"
TOKEN_TTL = 3600
# pyamqp hands a batch to the callback only after a socket read times out with nothing more to
# read: its default (0.2 s) is the floor of telemetry latency. Measured: 0.2 s -> ~345 ms per event.
# One receiving thread reads its partitions in turn, each read waiting up to this for its socket,
# so an event can also wait for the other partitions' timeouts first: Telemetry runs one
# receiving thread per partition.
SOCKET_TIMEOUT = 0.002


class HubUnavailable(Exception):
    """The hub cannot be reached (or the connection broke): retry later."""


class ServiceError(Exception):
    """The hub refused a request; `status` is the HTTP-style status IoT Hub documents for it."""

    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


# AMQP error condition -> IoT Hub status (azure-iot-sdk's translateError, service side)
_STATUS = {
    "amqp:resource-limit-exceeded": 403,     # 403004 DeviceMaximumQueueDepthExceeded
    "amqp:not-found": 404,                   # DeviceNotFound
    "amqp:link:message-size-exceeded": 413,
    "amqp:unauthorized-access": 401,
    "amqp:invalid-field": 400,
    "com.microsoft:argument-error": 400,
    "com.microsoft:device-container-throttled": 429,
    "com.microsoft:iot-hub-throttled": 429,
    "com.microsoft:timeout": 503,
    "com.microsoft:server-busy": 503,
}


def status_of(condition):
    if isinstance(condition, bytes):
        condition = condition.decode("utf-8", "replace")
    condition = str(condition or "")
    if condition in _STATUS:
        return _STATUS[condition]
    return 429 if "throttl" in condition else 500


@dataclass
class C2d:
    device_id: str
    body: bytes
    message_id: str
    correlation_id: Optional[str] = None
    content_type: Optional[str] = None
    content_encoding: Optional[str] = None
    properties: Optional[dict] = None
    ttl: Optional[int] = None          # seconds (absolute-expiry-time); None: the hub's default
    ack: Optional[str] = None          # iothub-ack: none, positive, negative, full


def _split_host(host):
    if ":" in host and not host.endswith("]"):
        name, port = host.rsplit(":", 1)
        if port.isdigit():
            return name, int(port)
    return host, None


def host_of(settings):
    """The host name of the hub the settings point at (no port)."""
    return _split_host(settings.parts("service")["HostName"])[0]


def event_dict(partition, event):
    """An EventData as the order service reads telemetry."""
    sysp = event.system_properties or {}
    device = sysp.get(DEVICE_ID)
    if isinstance(device, bytes):
        device = device.decode("utf-8", "replace")

    def text(v):
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    props = {text(k): text(v) for k, v in (event.properties or {}).items()}
    try:
        body = event.body
        if not isinstance(body, (bytes, bytearray)):
            body = b"".join(bytes(b) for b in body)
    except Exception:
        body = None
    system = {name: text(sysp[key]) for key, name in _SYSTEM.items() if sysp.get(key) is not None}
    return {"seq": f"{partition}:{event.sequence_number}", "partition": partition,
            "sequence": event.sequence_number, "offset": int(event.offset), "deviceId": device,
            "enqueuedTime": event.enqueued_time.isoformat().replace("+00:00", "Z") if event.enqueued_time else None,
            "properties": props, "systemProperties": system, "body": body}


_SYSTEM = {b"message-id": "messageId", b"correlation-id": "correlationId", b"content-type": "contentType",
           b"content-encoding": "contentEncoding", b"user-id": "userId"}


class Telemetry:
    """The Event Hubs-compatible endpoint, read from given cursors into a queue, one receiving
    thread per partition (azure-eventhub's receive_batch(partition_id=...), as its docs offer)."""

    def __init__(self, settings, prefetch=300):
        from azure.eventhub import EventHubConsumerClient, TransportType
        from host_tools.cloud.azure import local
        if settings.ca_file:
            local.trust(settings.ca_file)
        kw = {}
        if settings.ca_file:
            kw["connection_verify"] = settings.ca_file
        if settings.event_hub_endpoint:
            kw["custom_endpoint_address"] = settings.event_hub_endpoint
        self.client = EventHubConsumerClient.from_connection_string(
            settings.event_hub, consumer_group=settings.consumer_group, transport_type=TransportType.Amqp,
            retry_total=2, socket_timeout=SOCKET_TIMEOUT, **kw)
        self.prefetch = prefetch
        self.queue = queue.Queue()
        self.errors = queue.Queue()
        self.threads = []

    def partitions(self):
        return {p: self.client.get_partition_properties(p) for p in self.client.get_partition_ids()}

    def start(self, position):
        """position: {partition: int sequence number or str offset} (both exclusive; "-1" = all)."""

        def on_batch(context, events):
            if events:
                self.queue.put((context.partition_id, events))

        def on_error(context, error):
            # azure-eventhub calls this only once it has given up: a partition's receiver out of
            # its retries (retry_total), or a load-balancing pass that could not reach the hub
            # (the first one, which lists the partitions, included). It then reads that
            # partition again only at its next load-balancing pass, load_balancing_interval
            # (30 s) plus up to 20% later, and from the position given at the start, not from
            # what was read since: telemetry sent right after a hub restart waited 30-36 s (an
            # integration test timed out on a loaded machine). take() reports it as the hub
            # being unavailable instead, so the service reconnects on its own backoff, from the
            # cursors it committed.
            self.errors.put(error)

        def run(partition):
            try:
                self.client.receive_batch(on_batch, on_error=on_error, partition_id=partition,
                                          starting_position={partition: position[partition]},
                                          starting_position_inclusive=False, max_batch_size=self.prefetch,
                                          prefetch=self.prefetch)
            except Exception as exc:  # the loop ended: the service reconnects
                self.errors.put(exc)
        for partition in position:
            thread = threading.Thread(target=run, args=(partition,), name="eventhub-receive-%s" % partition,
                                      daemon=True)
            thread.start()
            self.threads.append(thread)

    def take(self, timeout, limit=2000):
        """[(partition, [EventData])] that arrived, waiting up to `timeout` for the first.
        HubUnavailable once a receiver has given up (see start()'s on_error) or stopped."""
        if not self.errors.empty():
            raise HubUnavailable(f"telemetry receiver gave up: {self._last_error()}")
        out, n = [], 0
        try:
            item = self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
        except queue.Empty:
            item = None
        while item is not None:
            out.append(item)
            n += len(item[1])
            if n >= limit:
                break
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                item = None
        if not out and not all(t.is_alive() for t in self.threads):
            raise HubUnavailable(f"telemetry receiver stopped: {self._last_error()}")
        return out

    def _last_error(self):
        err = None
        while not self.errors.empty():
            err = self.errors.get_nowait()
        return err

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass
        for thread in self.threads:
            thread.join(5)


class C2dSender:
    """C2D over one AMQP connection (python-qpid-proton as the client): a SAS token on $cbs for
    https://{HostName}, then a sender link to /messages/devicebound. send() puts a whole batch
    on the link and waits, without spinning, until every message has its outcome."""

    def __init__(self, settings, port=None, timeout=30):
        from proton import SSLDomain
        from proton.utils import BlockingConnection
        cs = settings.parts("service")
        self.host_name = cs["HostName"]
        self.host, _api_port = _split_host(self.host_name)
        self.policy, self.key = cs["SharedAccessKeyName"], cs["SharedAccessKey"]
        self.timeout = timeout
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        ca = settings.ca_file or _system_roots()
        domain.set_trusted_ca_db(ca)
        # proton matches DNS names only: for an IP literal (a local hub on 127.0.0.1) the chain
        # is verified against the CA, the name cannot be
        domain.set_peer_authentication(SSLDomain.VERIFY_PEER if _is_ip(self.host) else SSLDomain.VERIFY_PEER_NAME, ca)
        try:
            self.conn = BlockingConnection("amqps://%s:%d" % (self.host, port or 5671), ssl_domain=domain,
                                           timeout=timeout, allowed_mechs="ANONYMOUS", virtual_host=self.host)
            self._cbs_in = self.conn.create_receiver("$cbs", name="cbs-in-" + uuid.uuid4().hex[:8])
            self._cbs_out = self.conn.create_sender("$cbs", name="cbs-out-" + uuid.uuid4().hex[:8])
            self._put_token()
            self.link = self.conn.create_sender("/messages/devicebound", name="c2d-" + uuid.uuid4().hex[:8])
        except ServiceError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise HubUnavailable(f"AMQP to {self.host}: {type(exc).__name__}: {exc}") from None

    def _put_token(self):
        from proton import Message
        self._expiry = int(time.time()) + TOKEN_TTL
        token = sas.token(self.host_name, self.key, self._expiry, self.policy)
        mid = uuid.uuid4().hex
        self._cbs_out.send(Message(body=token, id=mid, reply_to="$cbs", properties={
            "operation": "put-token", "type": "servicebus.windows.net:sastoken",
            "name": "https://" + self.host_name}))
        reply = self._cbs_in.receive(timeout=self.timeout)
        try:
            self._cbs_in.accept()
        except IndexError:
            pass  # the reply came settled
        status = (reply.properties or {}).get("status-code")
        if status not in (200, 202):
            raise ServiceError(401, "the hub refused the service token: %s"
                               % (reply.properties or {}).get("status-description"))

    def send(self, items):
        """Send all, then wait for every outcome, in the same order: None (accepted),
        ServiceError (refused by the hub) or HubUnavailable (no answer: the link broke)."""
        return self.finish(self.begin(items))

    def begin(self, items):
        """Put all on the link and on the wire, without waiting for outcomes: a handle for
        finish(). The caller may do other work (its own commit) while the hub stores them."""
        from proton import Message, symbol
        try:
            if time.time() > self._expiry - 300:
                self._put_token()
            deliveries = []
            for m in items:
                app = {str(k): str(v) for k, v in (m.properties or {}).items()}
                if m.ack:
                    app["iothub-ack"] = m.ack
                body = m.body.encode() if isinstance(m.body, str) else bytes(m.body)
                msg = Message(body=body, inferred=True, id=m.message_id,
                              address="/devices/%s/messages/devicebound" % m.device_id,
                              correlation_id=m.correlation_id, properties=app or None)
                if m.content_type:
                    msg.content_type = symbol(m.content_type)
                if m.content_encoding:
                    msg.content_encoding = symbol(m.content_encoding)
                if m.ttl is not None:
                    msg.expiry_time = time.time() + m.ttl
                deliveries.append(msg.send(self.link.link))
            # on the wire now, waiting for nothing: proton's container writes to the socket a
            # few passes after the deliveries' events (each pass with a zero select timeout)
            container, transport = self.conn.container, self.conn.conn.transport
            saved, container.timeout = container.timeout, 0
            try:
                for _ in range(8):
                    container.process()
                    if transport.pending() <= 0:
                        break
            finally:
                container.timeout = saved
        except ServiceError:
            raise
        except Exception as exc:
            return (items, None, HubUnavailable(f"C2D link to {self.host}: {type(exc).__name__}: {exc}"))
        return (items, deliveries, None)

    def finish(self, handle):
        """Wait for the outcome of every message begin() sent, in order (see send())."""
        from proton import Delivery
        items, deliveries, broken = handle
        if broken is None:
            try:
                self.conn.wait(lambda: all(d.remote_state for d in deliveries), timeout=self.timeout,
                               msg="C2D outcomes")
            except Exception as exc:
                broken = HubUnavailable(f"C2D link to {self.host}: {type(exc).__name__}: {exc}")
        if broken is not None:
            return [broken] * len(items)
        results = []
        for d in deliveries:
            if d.remote_state == Delivery.ACCEPTED:
                results.append(None)
            else:
                cond = d.remote.condition
                name = cond.name if cond is not None else "amqp:internal-error"
                desc = (cond.description if cond is not None else None) or str(d.remote_state)
                results.append(ServiceError(status_of(name), f"{desc} ({name})"))
            d.settle()
        return results

    def close(self):
        conn = getattr(self, "conn", None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


def _is_ip(host):
    import ipaddress
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _system_roots():
    """The CA bundle to trust for Azure itself: the system's, else certifi's."""
    import ssl
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.exists(paths.cafile):
        return paths.cafile
    import certifi
    return certifi.where()


def _text(v):
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


class AzureHub:
    """Telemetry in, C2D out; both connections persistent until close()."""

    def __init__(self, settings):
        from host_tools.cloud.azure import local
        self.settings = settings
        if settings.ca_file:
            local.trust(settings.ca_file)
        try:
            self.telemetry = Telemetry(settings)
            self.partition_info = self.telemetry.partitions()
        except Exception as exc:
            raise HubUnavailable(f"event hub endpoint: {type(exc).__name__}: {exc}") from None
        self.c2d = None

    def start(self, cursors):
        self.telemetry.start({p: (seq if seq >= 0 else "-1") for p, seq in cursors.items()})

    def next_events(self, timeout):
        """(events in arrival order, {partition: last sequence number among them})."""
        events, cursors = [], {}
        for partition, batch in self.telemetry.take(timeout):
            for ev in batch:
                events.append(event_dict(partition, ev))
                cursors[partition] = ev.sequence_number
        return events, cursors

    def wake(self):
        """Make a next_events() that waits (in the serve loop's thread) return now: another
        thread (the commerce webhook) committed statuses for the loop to send."""
        self.telemetry.queue.put(("", []))

    def send_c2d(self, items):
        return self.finish_c2d(self.begin_c2d(items))

    def begin_c2d(self, items):
        """Send without waiting for the outcomes (pipelined with the caller's own work):
        a handle for finish_c2d()."""
        if self.c2d is None:
            try:
                self.c2d = C2dSender(self.settings, self.settings.amqp_port)
            except Exception as exc:
                raise HubUnavailable(f"C2D: {type(exc).__name__}: {exc}") from None
        sender = self.c2d
        try:
            return sender, sender.begin(items)
        except HubUnavailable:
            return sender, None

    def finish_c2d(self, handle):
        """One result per message sent by begin_c2d: None (accepted), ServiceError, HubUnavailable."""
        sender, started = handle
        try:
            results = sender.finish(started) if started is not None else None
        except HubUnavailable:
            results = None
        if results is None or any(isinstance(r, HubUnavailable) for r in results):
            sender.close()
            if self.c2d is sender:
                self.c2d = None
        if results is None:
            raise HubUnavailable(f"C2D link to {self.settings.source} broke")
        return results

    def close(self):
        self.telemetry.close()
        if self.c2d is not None:
            self.c2d.close()


def read_events(settings, since, timeout, device_id=None):
    """Telemetry after offset `since` (-1: from now) from every partition, waiting up to
    `timeout` s for the first; -> (events ordered by offset, the highest offset read or `since`).
    One short-lived consumer per call: for tools and tests (the order service keeps one)."""
    from host_tools.cloud.azure import local
    if settings.ca_file:
        local.trust(settings.ca_file)
    tel = Telemetry(settings)
    try:
        parts = tel.partitions()
        ends = {p: int(info["last_enqueued_offset"]) for p, info in parts.items()}
        if since < 0:
            since = max([0, *ends.values()])
        behind = {p for p, end in ends.items() if end > since}   # events already there to read
        tel.start({p: str(since) for p in parts})
        got, seen = [], {}
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            wait = 0.05 if (got or behind) else left
            batches = tel.take(max(0.0, min(wait, left)))
            for partition, events in batches:
                for ev in events:
                    e = event_dict(partition, ev)
                    seen[partition] = e["offset"]
                    if device_id is None or e["deviceId"] == device_id:
                        got.append(e)
            behind = {p for p in behind if seen.get(p, -1) < ends[p]}
            if (got and not batches and not behind) or left <= 0:
                break
        got.sort(key=lambda e: e["offset"])
        newest = max([since, *seen.values()])
        return got, newest
    finally:
        tel.close()
