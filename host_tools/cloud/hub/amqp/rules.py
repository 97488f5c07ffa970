"""Pure rules of the AMQP side: where a device's telemetry goes, what a receiver asked for,
what a token allows. No I/O, no clock (callers pass `now`)."""
import base64
import re
import zlib

from firmware.iothub import sas
from host_tools.cloud import tokens

# IoT Hub's shared access policies and their permissions (Azure portal: "Shared access policies").
REGISTRY_READ, REGISTRY_WRITE, SERVICE_CONNECT, DEVICE_CONNECT = (
    "RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect")
POLICY_RIGHTS = {
    "iothubowner": {REGISTRY_READ, REGISTRY_WRITE, SERVICE_CONNECT, DEVICE_CONNECT},
    "service": {SERVICE_CONNECT},
    "device": {DEVICE_CONNECT},
    "registryRead": {REGISTRY_READ},
    "registryReadWrite": {REGISTRY_READ, REGISTRY_WRITE},
}


class Refused(Exception):
    """A request the service refuses: `condition` is the AMQP error condition, `status` the
    CBS / management status code the real service answers with."""

    def __init__(self, condition, description, status=401):
        super().__init__(description)
        self.condition = condition
        self.description = description
        self.status = status


def partition_of(device_id, partitions):
    """The partition a device's telemetry goes to: fixed for a device, spread over devices."""
    return zlib.crc32(device_id.encode()) % partitions


def _host_of(uri):
    """'sb://127.0.0.1:5671/hub/x' or 'https://h' or 'h:443/x' -> 'h' (lowercase, no port)."""
    rest = uri.split("://", 1)[-1]
    host = rest.split("/", 1)[0]
    if host.startswith("["):
        host = host.split("]")[0] + "]"
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    return host.lower()


def _path_of(uri):
    rest = uri.split("://", 1)[-1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else "/"


def check_token(token, keys, host_names, now, entity=None):
    """A SAS token put on $cbs -> the set of rights it grants, or Refused (401) the way IoT Hub
    and Event Hubs refuse it. keys: {policy name: key}. entity: the event hub name when the
    token is for the Event Hubs-compatible endpoint (its sr must name that hub or a path in it)."""
    try:
        claims = tokens.parse(token)
    except sas.SasError as exc:
        raise Refused("amqp:unauthorized-access", "InvalidSignature: %s" % exc) from None
    policy = claims.get("skn")
    if not policy or policy not in keys:
        raise Refused("amqp:unauthorized-access",
                      "Unauthorized: the token names no shared access policy of this hub"
                      if not policy else "Unauthorized: unknown shared access policy %r" % policy)
    key = keys[policy]
    if entity is not None:
        # Event Hubs (Service Bus) signs with the key's text as bytes; IoT Hub base64-decodes it
        key = base64.b64encode(key.encode()).decode()
    try:
        tokens.check(token, key, now)
    except sas.SasError as exc:
        if "expired" in str(exc):
            raise Refused("amqp:unauthorized-access", "ExpiredToken: the token expired at %s" % claims["se"]) from None
        raise Refused("amqp:unauthorized-access", "InvalidSignature: %s" % exc) from None
    if _host_of(claims["sr"]) not in host_names:
        raise Refused("amqp:unauthorized-access", "InvalidAudience: the token is for another host")
    if entity is not None:
        path = _path_of(claims["sr"]).strip("/").lower()
        if path and path.split("/")[0] != entity.lower():
            raise Refused("amqp:unauthorized-access", "InvalidAudience: the token is for another entity")
    return set(POLICY_RIGHTS.get(policy, ())), claims["se"]


_RECEIVER = re.compile(r"^(?:amqps?://[^/]+)?/?([^/]+)/consumergroups/([^/]+)/partitions/([^/]+)/?$",
                       re.IGNORECASE)


def parse_receiver_address(address):
    """'amqps://h/{hub}/ConsumerGroups/{group}/Partitions/{n}' -> (hub, group, n) or None."""
    m = _RECEIVER.match(address or "")
    if not m:
        return None
    return m.group(1), m.group(2), m.group(3)


def entity_path(address):
    """'amqps://h:5671/messages/devicebound' -> 'messages/devicebound' (lowercase)."""
    address = address or ""
    if "://" in address:
        address = _path_of(address)
    return address.strip("/").lower()


_SELECTOR = re.compile(
    r"^\s*amqp\.annotation\.x-opt-(offset|sequence-number|enqueued-time)\s*(>=|>)\s*'?([^']*)'?\s*$",
    re.IGNORECASE)


def parse_selector(expression):
    """Event Hubs' receiver filter -> (field, inclusive, value) with field one of 'offset',
    'sequence-number', 'enqueued-time' and value an int ('@latest' -> 'latest', '-1' -> start).
    Raises Refused on anything else."""
    m = _SELECTOR.match(expression or "")
    if not m:
        raise Refused("amqp:not-implemented", "unsupported filter %r" % expression, 400)
    field, op, value = m.group(1).lower(), m.group(2), m.group(3).strip()
    if field == "offset" and value == "@latest":
        return field, False, "latest"
    try:
        number = int(value)
    except ValueError:
        raise Refused("amqp:invalid-field", "filter value %r is not a number" % value, 400) from None
    return field, op == ">=", number


def c2d_device(to):
    """The 'to' of a C2D message -> device id, or None when it is not /devices/{id}/messages/devicebound."""
    m = re.match(r"^/devices/([^/]+)/messages/devicebound/?$", to or "", re.IGNORECASE)
    if not m:
        return None
    try:
        return sas.unquote(m.group(1))
    except ValueError:
        return None
