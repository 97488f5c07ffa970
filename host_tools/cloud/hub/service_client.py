"""Python client for the local hub's service side, for tools and tests.

    client = ServiceClient.from_data_dir(".local/hub")   # reads hub.json, service.json, certs/ca.pem
    client.create_device("button-1")                      # -> {"deviceId", "primaryKey", ...}
    client.send_c2d("button-1", b'{"status":"shipped"}', content_type="application/json")
    events, nxt = client.events(since=0, timeout=10)

Registry, twins and methods go over IoT Hub's HTTPS REST API (stdlib http.client + ssl); C2D
and telemetry over AMQP as on Azure (host_tools.cloud.azure: /messages/devicebound and the
Event Hubs-compatible endpoint): the hub has no private endpoints for them.

Errors: HubUnavailable (hub not running / unreachable), ServiceError(status, message).
"""
import base64
import http.client
import json
import os
import ssl
import time
from urllib.parse import quote, urlencode

from firmware.iothub import sas

API_VERSION = "2021-04-12"


class HubUnavailable(Exception):
    """The hub is not running (no hub.json) or does not answer."""


def tls_context(ca_file):
    """A client TLS context trusting ca_file; HubUnavailable naming the file when it is unusable."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # ssl.SSLError is an OSError too
        what = exc.strerror if not isinstance(exc, ssl.SSLError) else "not a PEM certificate (truncated?)"
        raise HubUnavailable("CA certificate %s: %s; `python -m host_tools certs --out %s` says what is "
                             "wrong" % (ca_file, what, os.path.dirname(ca_file) or ".")) from None


class ServiceError(Exception):
    def __init__(self, status, message):
        super().__init__("%s: %s" % (status, message))
        self.status = status
        self.message = message


class ServiceClient:
    def __init__(self, host, port, key, ca_file, policy="iothubowner", timeout=30):
        self.host = host
        self.port = port
        self.key = key
        self.policy = policy
        self.timeout = timeout
        self._ssl = tls_context(ca_file)
        self._token = None
        self._token_expiry = 0

    _data_dir = None
    _c2d = None

    @classmethod
    def from_data_dir(cls, data_dir, timeout=30):
        try:
            with open(os.path.join(data_dir, "hub.json")) as f:
                info = json.load(f)
        except (OSError, ValueError):
            raise HubUnavailable("no hub is running for %s (start: python -m host_tools hub --data %s)"
                                 % (data_dir, data_dir)) from None
        try:
            with open(os.path.join(data_dir, "service.json")) as f:
                service = json.load(f)
        except (OSError, ValueError):
            raise HubUnavailable("%s has no service.json; start the hub once to create it" % data_dir) from None
        try:
            host, port, key = info["host"], int(info["api_port"]), service["key"]
            policy = service.get("policy", "iothubowner")
        except (KeyError, TypeError, ValueError, AttributeError):
            raise HubUnavailable("%s: hub.json or service.json is incomplete; restart the hub" % data_dir) from None
        client = cls(host, port, key, os.path.join(data_dir, "certs", "ca.pem"), policy, timeout)
        client._data_dir = data_dir
        return client

    def _amqp(self):
        from host_tools.cloud.azure import settings
        if self._data_dir is None:
            raise HubUnavailable("C2D and telemetry need the hub's data folder (ServiceClient.from_data_dir)")
        try:
            return settings.from_hub_data(self._data_dir)
        except settings.SettingsError as exc:
            raise HubUnavailable(str(exc)) from None

    def connection_string(self):
        """An IoT Hub service connection string for the official azure-iot-hub SDK."""
        return "HostName=%s:%d;SharedAccessKeyName=%s;SharedAccessKey=%s" % (
            self.host, self.port, self.policy, self.key)

    def _auth(self):
        now = int(time.time())
        if self._token is None or now > self._token_expiry - 300:
            self._token_expiry = now + 3600
            self._token = sas.token("%s:%d" % (self.host, self.port), self.key, self._token_expiry, self.policy)
        return self._token

    def request(self, method, path, body=None, headers=None, query=None, timeout=None):
        q = {"api-version": API_VERSION}
        q.update(query or {})
        url = path + "?" + urlencode(q)
        h = {"Authorization": self._auth(), "Accept": "application/json"}
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json; charset=utf-8"
        h.update(headers or {})
        conn = http.client.HTTPSConnection(self.host, self.port, context=self._ssl,
                                           timeout=timeout or self.timeout)
        try:
            conn.request(method, url, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
        except (ConnectionRefusedError, ConnectionResetError, ssl.SSLError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise HubUnavailable("hub at %s:%d does not answer (%s)" % (self.host, self.port, exc)) from None
        finally:
            conn.close()
        if resp.status >= 400:
            try:
                message = json.loads(data)["Message"]
            except (ValueError, KeyError, TypeError):
                message = data.decode("utf-8", "replace")
            raise ServiceError(resp.status, message)
        return json.loads(data) if data else None

    # ---- registry -------------------------------------------------------------------------
    def create_device(self, device_id, primary_key=None, status="enabled"):
        body = {"deviceId": device_id, "status": status,
                "authentication": {"type": "sas", "symmetricKey": {"primaryKey": primary_key,
                                                                    "secondaryKey": None}}}
        dev = self.request("PUT", "/devices/" + quote(device_id, safe=""), body)
        return _flatten(dev)

    def get_device(self, device_id):
        return _flatten(self.request("GET", "/devices/" + quote(device_id, safe="")))

    def delete_device(self, device_id):
        self.request("DELETE", "/devices/" + quote(device_id, safe=""), headers={"If-Match": "*"})

    def list_devices(self):
        return [_flatten(d) for d in self.request("GET", "/devices")]

    # ---- C2D, telemetry -------------------------------------------------------------------
    def purge_c2d(self, device_id):
        """Deletes every C2D message still queued for the device, delivered-but-unacknowledged
        ones too (the REST API's "Purge Cloud To Device Message Queue"); returns how many."""
        r = self.request("DELETE", "/devices/%s/commands" % quote(device_id, safe=""))
        return r["totalMessagesPurged"]

    def send_c2d(self, device_id, body, properties=None, message_id=None, correlation_id=None,
                 content_type=None, content_encoding=None, ttl=None, ack=None):
        """One C2D message over AMQP; returns its message id. ServiceError 403 (queue full),
        404 (no such device), 413 (over 64 KB), 400 as the hub refuses it."""
        import uuid
        from host_tools.cloud.azure import client as azure
        if isinstance(body, str):
            body = body.encode()
        message_id = message_id or str(uuid.uuid4())
        if self._c2d is None:   # one AMQP connection for all the sends of this client
            try:
                settings = self._amqp()
                self._c2d = azure.C2dSender(settings, settings.amqp_port)
            except HubUnavailable:
                raise
            except Exception as exc:
                raise HubUnavailable("hub AMQP endpoint: %s" % exc) from None
        try:
            (result,) = self._c2d.send([azure.C2d(device_id, bytes(body), message_id, correlation_id, content_type,
                                                  content_encoding, {k: str(v) for k, v in (properties or {}).items()},
                                                  ttl, ack)])
        except azure.HubUnavailable as exc:
            result = exc
        if isinstance(result, azure.HubUnavailable):
            self._c2d.close()
            self._c2d = None
        if isinstance(result, azure.ServiceError):
            raise ServiceError(result.status, result.message)
        if isinstance(result, azure.HubUnavailable):
            raise HubUnavailable(str(result))
        return message_id

    def events(self, since, timeout=10, device_id=None):
        """Telemetry recorded after offset `since` (-1 = from now), waiting up to `timeout` s,
        read from the Event Hubs-compatible endpoint; -> (events, next offset)."""
        from host_tools.cloud.azure import client as azure
        try:
            return azure.read_events(self._amqp(), since, timeout, device_id)
        except azure.HubUnavailable as exc:
            raise HubUnavailable(str(exc)) from None

    def wait_event(self, predicate, timeout=10, since=0, device_id=None):
        """First event matching predicate(event) within timeout seconds, else None."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            events, since = self.events(since, min(remaining, 10), device_id)
            for e in events:
                if predicate(e):
                    return e

    # ---- twins and methods ----------------------------------------------------------------
    def get_twin(self, device_id):
        return self.request("GET", "/twins/" + quote(device_id, safe=""))

    def update_desired(self, device_id, patch):
        return self.request("PATCH", "/twins/" + quote(device_id, safe=""),
                            {"properties": {"desired": patch}}, headers={"If-Match": "*"})

    def invoke_method(self, device_id, name, payload=None, timeout=30):
        body = {"methodName": name, "payload": payload, "responseTimeoutInSeconds": timeout,
                "connectTimeoutInSeconds": 0}
        return self.request("POST", "/twins/%s/methods" % quote(device_id, safe=""), body,
                            timeout=timeout + self.timeout)


    # ---- test tooling, not an IoT Hub API ----------------------------------------------------
    def inject_faults(self, specs):
        """Arm faults on the running hub (see host_tools/cloud/hub/faults.py); -> what is armed."""
        return self.request("POST", "/test-tooling/faults", {"inject": list(specs)})

    def faults(self):
        return self.request("GET", "/test-tooling/faults")


def _flatten(dev):
    keys = (dev.get("authentication") or {}).get("symmetricKey") or {}
    out = dict(dev)
    out["primaryKey"] = keys.get("primaryKey")
    out["secondaryKey"] = keys.get("secondaryKey")
    return out
