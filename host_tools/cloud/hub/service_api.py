"""The hub's HTTPS service API, shaped like IoT Hub's service REST API (api-version 2021-04-12).

Authorization: a SharedAccessSignature for policy iothubowner signed with DIR/service.json's key.
  PUT/GET/DELETE /devices/{id}      GET /devices
  GET/PATCH /twins/{id}             POST /twins/{id}/methods
  DELETE /devices/{id}/commands     purge the device's C2D queue
  GET /messages/serviceBound/feedback, DELETE .../feedback/{lockToken}, POST .../{lockToken}/abandon
                                    C2D feedback over HTTPS: the same queue as over AMQP (amqp/feedback.py)
C2D sends and telemetry are not here: as on IoT Hub, the service side sends C2D and reads
telemetry over AMQP (amqp/).
Not IoT Hub: GET /releases/{kind}/{version}/{name}, over-the-air update files (releases.py).
Test tooling, not an IoT Hub API (fault injection for tests and demos, see faults.py):
  GET/POST /test-tooling/faults   {"inject": ["twin_get=429:3", ...]} -> what is armed
"""
import base64
import datetime

from host_tools.cloud.hub import faults, releases
from host_tools.cloud.hub.http_server import HttpError, Response
from host_tools.cloud.hub.hub import HubError
from host_tools.cloud.hub.store import StoreError


def iso(ts):
    if not ts:
        return "0001-01-01T00:00:00Z"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _etag(n):
    return base64.b64encode(str(n).encode()).decode()


class ServiceApi:
    def __init__(self, hub):
        self.hub = hub

    async def handle(self, req):
        if releases.is_release_request(req):      # update files, not part of IoT Hub's API
            return releases.serve(self.hub.data_dir, req)
        try:
            self.hub.check_service_token(req.headers.get("authorization"))
            return await self._route(req)
        except (HubError, StoreError) as exc:
            raise HttpError(exc.status, str(exc)) from None

    async def _route(self, req):
        seg, m = req.segments, req.method
        if seg == ["devices"] and m == "GET":
            return Response.json([self._device(d) for d in self.hub.store.list_devices()])
        if len(seg) == 2 and seg[0] == "devices":
            return await self._devices(req, seg[1])
        if len(seg) == 3 and seg[0] == "devices" and seg[2] == "commands" and m == "DELETE":
            return self._purge(seg[1])
        if [x.lower() for x in seg[:3]] == ["messages", "servicebound", "feedback"]:
            return self._feedback(req, seg[3:])
        if len(seg) == 2 and seg[0] == "twins":
            return await self._twins(req, seg[1])
        if len(seg) == 3 and seg[0] == "twins" and seg[2] == "methods" and m == "POST":
            return await self._method(req, seg[1])
        if seg == ["test-tooling", "faults"] and m in ("GET", "POST"):
            return self._faults(req)
        raise HttpError(404, "no such resource: %s %s" % (m, req.path))

    # ---- registry -------------------------------------------------------------------------
    def _device(self, dev):
        conn = dev["device_id"] in self.hub.connections
        return {
            "deviceId": dev["device_id"], "generationId": dev["generation_id"],
            "etag": _etag(dev["etag"]),
            "connectionState": "Connected" if conn else "Disconnected",
            "status": dev["status"], "statusReason": None,
            "connectionStateUpdatedTime": iso(None), "statusUpdatedTime": iso(dev["status_updated"]),
            "lastActivityTime": iso(None),
            "cloudToDeviceMessageCount": self.hub.store.queued_c2d_count(dev["device_id"]),
            "authentication": {"type": "sas", "symmetricKey": {
                "primaryKey": dev["primary_key"], "secondaryKey": dev["secondary_key"]},
                "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None}},
            "capabilities": {"iotEdge": False},
        }

    async def _devices(self, req, device_id):
        store = self.hub.store
        if req.method == "GET":
            return Response.json(self._device(store.require_device(device_id)))
        if req.method == "DELETE":
            store.remove_device(device_id)
            self.hub.kick(device_id, "device deleted")
            return Response(204)
        if req.method == "PUT":
            body = req.json()
            if not isinstance(body, dict):
                raise HttpError(400, "body must be a Device object")
            if body.get("deviceId", device_id) != device_id:
                raise HttpError(400, "deviceId in the body does not match the URL")
            auth = body.get("authentication") or {}
            if not isinstance(auth, dict) or auth.get("type", "sas") != "sas":
                raise HttpError(400, "authentication must be an object of type sas (symmetric key)")
            keys = auth.get("symmetricKey") or {}
            if not isinstance(keys, dict) or not all(isinstance(keys.get(k), (str, type(None)))
                                                     for k in ("primaryKey", "secondaryKey")):
                raise HttpError(400, "authentication.symmetricKey must be an object of key strings")
            status = body.get("status") or "enabled"
            if not isinstance(status, str):
                raise HttpError(400, "status must be enabled or disabled")
            if store.get_device(device_id) is None:
                dev = store.add_device(device_id, keys.get("primaryKey"), keys.get("secondaryKey"), status)
            else:
                dev = store.update_device(device_id, status, keys.get("primaryKey"), keys.get("secondaryKey"))
                if dev["status"] != "enabled":
                    self.hub.kick(device_id, "device disabled")
            return Response.json(self._device(dev))
        raise HttpError(405, "method not allowed")

    # ---- C2D: purge, feedback ------------------------------------------------------------------
    def _purge(self, device_id):
        """IoT Hub's PurgeMessageQueueResult; the purged messages' feedback is "Purged"."""
        self.hub.store.require_device(device_id)
        return Response.json({"deviceId": device_id, "totalMessagesPurged": self.hub.store.purge_c2d(device_id)})

    def _feedback(self, req, rest):
        from host_tools.cloud.hub.amqp import feedback
        amqp = self.hub.amqp
        if amqp is None:
            raise HttpError(503, "the feedback queue is not open yet")
        if not rest and req.method == "GET":
            taken = feedback.take(self.hub.store, "https", lock_seconds=amqp.feedback_lock)
            if not taken:
                return Response(204)
            fid, token, mid, created, body = taken[0]
            # as IoT Hub's HTTPS receive: the lock token is the (quoted) ETag
            return Response(200, body, feedback.CONTENT_TYPE, headers={
                "ETag": '"%s"' % token, "iothub-messageid": mid, "iothub-enqueuedtime": iso(created),
                "iothub-userid": amqp.hub_name()})
        if len(rest) == 1 and req.method == "DELETE":
            settle, token = feedback.completed, rest[0]
        elif len(rest) == 2 and rest[1].lower() == "abandon" and req.method == "POST":
            settle, token = feedback.abandoned, rest[0]
        else:
            raise HttpError(404, "no such resource: %s %s" % (req.method, req.path))
        fid = feedback.locked(self.hub.store, token)
        if fid is None or not settle(self.hub.store, fid, token):
            raise HttpError(412, "the lock token %s is not valid: unknown, settled, or its lock expired "
                                 "(receive the feedback message again)" % token)
        if settle is feedback.abandoned:
            amqp.feedback_changed()
        return Response(204)

    # ---- twins ----------------------------------------------------------------------------
    def _twin(self, device_id):
        dev = self.hub.store.require_device(device_id)
        twin = self.hub.store.get_twin(device_id)
        meta = {"$lastUpdated": iso(dev["status_updated"])}
        return {
            "deviceId": device_id, "etag": _etag(twin["desired_version"]),
            "deviceEtag": _etag(dev["etag"]),
            "version": twin["desired_version"] + twin["reported_version"],
            "status": dev["status"],
            "connectionState": "Connected" if device_id in self.hub.connections else "Disconnected",
            "lastActivityTime": iso(None),
            "cloudToDeviceMessageCount": self.hub.store.queued_c2d_count(device_id),
            "authenticationType": "sas", "tags": twin["tags"],
            "properties": {
                "desired": dict(twin["desired"], **{"$metadata": meta, "$version": twin["desired_version"]}),
                "reported": dict(twin["reported"], **{"$metadata": meta, "$version": twin["reported_version"]}),
            },
            "capabilities": {"iotEdge": False},
        }

    async def _twins(self, req, device_id):
        if req.method == "GET":
            return Response.json(self._twin(device_id))
        if req.method == "PATCH":
            body = req.json()
            if not isinstance(body, dict):
                raise HttpError(400, "body must be a Twin object")
            self.hub.store.require_device(device_id)
            tags = body.get("tags")
            if tags:
                self.hub.store.patch_twin(device_id, "tags", tags)
            properties = body.get("properties") or {}
            if not isinstance(properties, dict):
                raise HttpError(400, "properties must be an object")
            desired = properties.get("desired")
            if desired is not None:
                if not isinstance(desired, dict):
                    raise HttpError(400, "properties.desired must be an object")
                await self.hub.update_desired(device_id, desired)
            return Response.json(self._twin(device_id))
        raise HttpError(405, "method not allowed")

    async def _method(self, req, device_id):
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("methodName"), str) or not body["methodName"]:
            raise HttpError(400, "body must be {\"methodName\": ..., \"payload\": ...}")
        timeout = body.get("responseTimeoutInSeconds") or 30
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 5 <= timeout <= 300:
            raise HttpError(400, "responseTimeoutInSeconds must be between 5 and 300")
        result = await self.hub.invoke_method(device_id, body["methodName"], body.get("payload"), timeout)
        return Response.json(result)

    # ---- test tooling -------------------------------------------------------------------------
    def _faults(self, req):
        if req.method == "POST":
            body = req.json()
            specs = body.get("inject") if isinstance(body, dict) else None
            if not isinstance(specs, list) or not all(isinstance(x, str) for x in specs):
                raise HttpError(400, "body must be {\"inject\": [\"KIND=VALUE\", ...]}")
            try:
                parsed = [faults.parse(x) for x in specs]
            except faults.FaultSpecError as exc:
                raise HttpError(400, str(exc)) from None
            for kind, value, count in parsed:
                self.hub.faults.arm(kind, value, count)
        return Response.json(self.hub.faults.state())
