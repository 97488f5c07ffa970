"""The local Device Provisioning Service: symmetric-key enrollments, served on the hub's MQTT
listener (the CONNECT user name `{idScope}/registrations/{registrationId}/api-version=...` says a
connection is for DPS, not for the hub).

As Azure's DPS does over MQTT:
  - CONNECT is accepted for any well-formed DPS user name whose registration id is the client id;
    the SAS token (sr = `{idScope}/registrations/{registrationId}`, signed with the individual
    enrollment's key or with the key derived from a group's key) is checked per request, and a
    bad one, an unknown registration or another id scope is answered
    `$dps/registrations/res/401/?$rid=..` `{"errorCode":401002,..,"message":"Unauthorized",..}`.
  - register -> 202 `&retry-after=N` `{"operationId":..,"status":"assigning"}`; the status poll ->
    200 `{"operationId","status":"assigned","registrationState":{"assignedHub","deviceId",..}}`,
    or 200 with `"status":"disabled"` when the enrollment is disabled.
  - an assignment creates the device in the hub's registry with the device key (derived from the
    group key for a group), or updates its keys; registering again returns the same assignment.
  - test faults (host_tools/cloud/hub/faults.py) `dps_register=429:N` / `dps_status=...`: the next
    N requests are answered that status before anything is checked, as DPS answers a device over
    its rate limits (registrations per minute per service, 5 polls per 10 s per device), with
    `&retry-after=` for 429 and 5xx.
"""
import datetime
import json
import logging
import time
import uuid

from firmware.iothub import sas
from firmware.iothub import dps as device_dps
from host_tools.cloud.dps.store import DpsStore
from host_tools.cloud.hub.store import StoreError
from host_tools.cloud import tokens

log = logging.getLogger("host_tools.cloud.dps")

DEFAULT_RETRY_AFTER = 3  # what Azure's DPS answers a register with


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error_body(status, message):
    # 401002 is what Azure's DPS sends for a bad token (seen in the SDKs' issue trackers); the
    # sub-codes of the others are not documented, so they are the status times 1000
    code = {401: 401002}.get(status, status * 1000)
    return {"errorCode": code, "trackingId": str(uuid.uuid4()), "message": message,
            "timestampUtc": _utc(time.time())}


class Dps:
    def __init__(self, hub, path, retry_after=DEFAULT_RETRY_AFTER):
        self.hub = hub
        self.store = DpsStore(path)
        self.retry_after = retry_after

    def close(self):
        self.store.close()

    # ---- requests (synchronous; each returns (status, body dict, retry_after or None)) ------
    def _injected(self, kind, reg_id):
        """An armed test fault for this request -> its answer, else None."""
        status = self.hub.faults.take(kind)
        if not status:
            return None
        log.info("%s: injected fault: %s answered %d", reg_id, kind, status)
        message = "Operations are being throttled" if status == 429 else "Injected fault"
        return status, error_body(status, message), self.retry_after if status == 429 or status >= 500 else None

    def _enrollment_for(self, scope, reg_id, token, now):
        """The enrollment whose key signed `token` for this registration, or None (401)."""
        if scope != self.store.id_scope():
            return None
        resource = device_dps.dps_resource(scope, reg_id)
        individual = self.store.get_enrollment(reg_id)
        if individual is not None and individual["kind"] == "individual":
            candidates = [(individual, individual["primary_key"]), (individual, individual["secondary_key"])]
        else:
            candidates = []
            for g in self.store.groups():
                for k in (g["primary_key"], g["secondary_key"]):
                    candidates.append((g, tokens.derive_key(k, reg_id)))
        for enrollment, key in candidates:
            try:
                claims = tokens.check(token, key, now, resource_uri=resource)
            except sas.SasError:
                continue
            if claims.get("skn") in (None, "registration"):
                return enrollment
        return None

    def register(self, scope, reg_id, token, body, now=None):
        fault = self._injected("dps_register", reg_id)
        if fault:
            return fault
        now = time.time() if now is None else now
        enrollment = self._enrollment_for(scope, reg_id, token, now)
        if enrollment is None:
            return 401, error_body(401, "Unauthorized"), None
        try:
            req = json.loads(body.decode("utf-8") or "null")
        except (UnicodeDecodeError, ValueError):
            req = None
        if not isinstance(req, dict) or req.get("registrationId") != reg_id:
            return 400, error_body(400, "The registration request body is not valid: it must be a "
                                        "JSON object whose registrationId is the one connected"), None
        if enrollment["status"] != "enabled":
            op = self.store.add_operation(reg_id, "disabled")
            log.info("%s: registration refused, enrollment %s is disabled", reg_id, enrollment["name"])
        else:
            try:
                self._assign(enrollment, reg_id)
            except StoreError as exc:
                log.warning("%s: assignment failed: %s", reg_id, exc)
                op = self.store.add_operation(reg_id, "failed")
            else:
                op = self.store.add_operation(reg_id, "assigned")
        return 202, {"operationId": op, "status": "assigning"}, self.retry_after

    def _assign(self, enrollment, reg_id):
        old = self.store.get_registration(reg_id)
        device_id = enrollment["device_id"] or reg_id
        hub_host = old["assigned_hub"] if old and old["device_id"] == device_id else self.hub.host
        if enrollment["kind"] == "group":
            keys = [tokens.derive_key(enrollment[k], reg_id) for k in ("primary_key", "secondary_key")]
        else:
            keys = [enrollment["primary_key"], enrollment["secondary_key"]]
        registry = self.hub.store
        if registry.get_device(device_id) is None:
            registry.add_device(device_id, primary_key=keys[0], secondary_key=keys[1])
            log.info("%s: device %s created in the hub", reg_id, device_id)
        else:
            registry.update_device(device_id, primary_key=keys[0], secondary_key=keys[1])
        self.store.save_registration(reg_id, enrollment["name"], device_id, hub_host)

    def operation_status(self, scope, reg_id, token, op_id, now=None):
        fault = self._injected("dps_status", reg_id)
        if fault:
            return fault
        now = time.time() if now is None else now
        if self._enrollment_for(scope, reg_id, token, now) is None:
            return 401, error_body(401, "Unauthorized"), None
        op = self.store.get_operation(op_id)
        if op is None or op["registration_id"] != reg_id:
            return 404, error_body(404, "Operation %s not found" % op_id), None
        reg = self.store.get_registration(reg_id)
        state = {"registrationId": reg_id, "status": op["status"],
                 "createdDateTimeUtc": _utc(reg["created"] if reg else op["created"]),
                 "lastUpdatedDateTimeUtc": _utc(reg["updated"] if reg else op["created"])}
        if op["status"] == "assigned" and reg is not None:
            state.update(assignedHub=reg["assigned_hub"], deviceId=reg["device_id"],
                         substatus="initialAssignment", etag=reg["etag"])
        elif op["status"] == "failed":
            state.update(errorCode=500000, errorMessage="The device could not be created in the IoT hub")
        return 200, {"operationId": op_id, "status": op["status"], "registrationState": state}, None

    # ---- MQTT -------------------------------------------------------------------------------
    def authenticate(self, session, scope, reg_id):
        """A CONNECT whose user name the hub parsed as DPS's -> a connection; None (CONNACK 5)
        when the registration id is not the client id. The token is checked per request, as DPS
        does, not here."""
        if reg_id != (session.client_id or ""):
            log.info("%s: refused, DPS user name names registration %s", session.client_id, reg_id)
            return None
        token = session.password or ""
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        from host_tools.cloud.dps.connection import DpsConnection
        return DpsConnection(self, scope, reg_id, token)
