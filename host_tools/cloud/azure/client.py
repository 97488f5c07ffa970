"""The order service's hub, over Azure's own protocols (works against IoT Hub and the local hub).

    hub = AzureHub(settings)
    hub.start({"0": 41, "1": -1})          # last handled sequence number per partition
    events, cursors = hub.next_events(1.0) # what arrived, and the cursors after it
    hub.send_c2d([C2d(...), ...])          # pipelined; one result per message (None = accepted)

Telemetry: azure-eventhub's EventHubConsumerClient.receive_batch in a thread, from the
service's own checkpoints (sequence numbers, exclusive), into a queue. Nothing here commits:
the caller stores the cursors with the orders they produced, so events fetched but not yet
committed are simply read again after a restart.

C2D: uamqp, the AMQP library azure-iot-hub uses, built as azure-iot-hub builds it (SAS token on
$cbs, target amqps://{host}/messages/devicebound), with two differences the README explains:
each message's outcome is read (the SDK's send_c2d_message raises a bare "C2D message send
failure", losing whether the queue was full, the device unknown or the hub throttling), and a
batch of messages is queued before waiting (one round trip per batch, not per message).
"""
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Optional

from firmware.iothub import sas

log = logging.getLogger("host_tools.cloud.azure")

DEVICE_ID = b"iothub-connection-device-id"
TOKEN_TTL = 3600
# pyamqp hands a batch to the callback only after a socket read times out with nothing more to
# read: its default (0.2 s) is the floor of telemetry latency. Measured: 0.2 s -> ~345 ms per event.
SOCKET_TIMEOUT = 0.005


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


# what uamqp reports when the message never got an answer (the link or connection broke)
_NO_ANSWER = ("amqp:client-error", "amqp:unknown-error")


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


def _split_host(host):
    if ":" in host and not host.endswith("]"):
        name, port = host.rsplit(":", 1)
        if port.isdigit():
            return name, int(port)
    return host, None


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
    return {"seq": f"{partition}:{event.sequence_number}", "partition": partition,
            "sequence": event.sequence_number, "deviceId": device, "properties": props,
            "systemProperties": {"messageId": text(sysp.get(b"message-id"))}, "body": body}


class Telemetry:
    """The Event Hubs-compatible endpoint, read from given cursors into a queue."""

    def __init__(self, settings, prefetch=300):
        from azure.eventhub import EventHubConsumerClient, TransportType
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
        self.thread = None

    def partitions(self):
        return {p: self.client.get_partition_properties(p) for p in self.client.get_partition_ids()}

    def start(self, cursors):
        position = {p: (seq if seq >= 0 else "-1") for p, seq in cursors.items()}

        def on_batch(context, events):
            if events:
                self.queue.put((context.partition_id, events))

        def on_error(context, error):
            self.errors.put(error)

        def run():
            try:
                self.client.receive_batch(on_batch, on_error=on_error, starting_position=position,
                                          starting_position_inclusive=False, max_batch_size=self.prefetch,
                                          prefetch=self.prefetch)
            except Exception as exc:  # the loop ended: the service reconnects
                self.errors.put(exc)
        self.thread = threading.Thread(target=run, name="eventhub-receive", daemon=True)
        self.thread.start()

    def take(self, timeout, limit=2000):
        """[(partition, [EventData])] that arrived, waiting up to `timeout` for the first."""
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
        if not out and not self.thread.is_alive():
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
        if self.thread is not None:
            self.thread.join(5)


class C2dSender:
    def __init__(self, settings, port=None):
        import uamqp
        from azure.core.credentials import AccessToken
        from uamqp import authentication, errors
        cs = settings.parts("service")
        host, _api_port = _split_host(cs["HostName"])
        self.host = host
        policy, key = cs["SharedAccessKeyName"], cs["SharedAccessKey"]

        def get_token():
            expiry = int(time.time()) + TOKEN_TTL
            return AccessToken(sas.token(cs["HostName"], key, expiry, policy), expiry)
        auth = authentication.JWTTokenAuth(
            audience="https://" + cs["HostName"], uri="https://" + cs["HostName"], get_token=get_token,
            token_type=b"servicebus.windows.net:sastoken", port=port or 5671)
        auth.update_token()
        self.client = uamqp.SendClient("amqps://%s/messages/devicebound" % host, auth=auth,
                                       keep_alive_interval=120,
                                       error_policy=errors.ErrorPolicy(max_retries=0))
        self._uamqp = uamqp

    def send(self, items):
        """Send all, then wait for every outcome, in the same order: None (accepted),
        ServiceError (refused by the hub) or HubUnavailable (no answer: the link broke)."""
        uamqp = self._uamqp
        results = [ServiceError(500, "no outcome")] * len(items)
        for i, m in enumerate(items):
            props = uamqp.message.MessageProperties(
                message_id=m.message_id, to="/devices/%s/messages/devicebound" % m.device_id,
                correlation_id=m.correlation_id, content_type=m.content_type,
                content_encoding=m.content_encoding)

            def done(result, exc, i=i):
                if result == uamqp.constants.MessageSendResult.Ok:
                    results[i] = None
                else:
                    cond = getattr(exc, "condition", None) or getattr(exc, "error_condition", None)
                    desc = getattr(exc, "description", None) or str(exc)
                    if isinstance(desc, bytes):
                        desc = desc.decode("utf-8", "replace")
                    cond = _text(getattr(cond, "value", cond))      # uamqp's ErrorCodes enum
                    if isinstance(cond, str) and ":" in cond and cond not in _NO_ANSWER:   # the hub's answer
                        results[i] = ServiceError(status_of(cond), f"{desc} ({cond})")
                    else:                                       # never got an answer
                        results[i] = HubUnavailable(f"C2D link to {self.host}: {desc} ({cond})")
            message = uamqp.Message(m.body, properties=props, application_properties=dict(m.properties or {}))
            message.on_send_complete = done
            self.client.queue_message(message)
        try:
            self.client.send_all_messages(close_on_done=False)
        except Exception as exc:
            raise HubUnavailable(f"C2D link to {self.host}: {type(exc).__name__}: {exc}") from None
        return results

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass


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
        self.telemetry.start(cursors)

    def next_events(self, timeout):
        """(events in arrival order, {partition: last sequence number among them})."""
        events, cursors = [], {}
        for partition, batch in self.telemetry.take(timeout):
            for ev in batch:
                events.append(event_dict(partition, ev))
                cursors[partition] = ev.sequence_number
        return events, cursors

    def send_c2d(self, items):
        if self.c2d is None:
            try:
                self.c2d = C2dSender(self.settings, self.settings.amqp_port)
            except Exception as exc:
                raise HubUnavailable(f"C2D: {type(exc).__name__}: {exc}") from None
        try:
            results = self.c2d.send(items)
        except HubUnavailable:
            results = None
        if results is None or any(isinstance(r, HubUnavailable) for r in results):
            self.c2d.close()
            self.c2d = None
        if results is None:
            raise HubUnavailable(f"C2D link to {self.settings.source} broke")
        return results

    def close(self):
        self.telemetry.close()
        if self.c2d is not None:
            self.c2d.close()
