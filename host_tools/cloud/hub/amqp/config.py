"""The Event Hubs-compatible endpoint's fixed settings and the hub's shared access policies.

DIR/eventhub.json  {"name", "partitions", "consumerGroups", "created", "retentionHours"}: fixed
                   when the hub is first started (partitions cannot change later, as on IoT Hub;
                   the retention can, with `hub --retention-hours`, and is kept here).
DIR/policies.json  {policy: key} for the policies other than iothubowner (whose key stays in
                   service.json); 0600: it holds keys.
"""
import os
import time

from host_tools.files import read_json, write_json

DEFAULT_PARTITIONS = 2
MAX_PARTITIONS = 32
MAX_CONSUMER_GROUPS = 20          # besides $Default, as on an S1 hub
DEFAULT_GROUP = "$Default"
EXTRA_POLICIES = ("service", "registryRead", "registryReadWrite")
# the built-in endpoint's retention time: IoT Hub's default is one day, at most seven
DEFAULT_RETENTION_HOURS = 24
MAX_RETENTION_HOURS = 7 * 24


class ConfigError(Exception):
    pass


def _paths(data_dir):
    return os.path.join(data_dir, "eventhub.json"), os.path.join(data_dir, "policies.json")


def check_retention(hours):
    if not 1 <= hours <= MAX_RETENTION_HOURS:
        raise ConfigError("--retention-hours must be between 1 and %d (IoT Hub: 1 to 7 days)" % MAX_RETENTION_HOURS)
    return hours


def ensure(data_dir, partitions=None, hub_name="local", retention_hours=None):
    """Create the files on first use; `partitions` given for an existing hub must match;
    `retention_hours` given is stored (a later start without it keeps it)."""
    from host_tools.cloud.hub.store import new_key
    if retention_hours is not None:
        check_retention(retention_hours)
    eh_path, pol_path = _paths(data_dir)
    if os.path.exists(eh_path):
        eh = load(data_dir)
        if partitions is not None and partitions != eh["partitions"]:
            raise ConfigError("this hub was created with %d partitions; partitions are fixed at creation "
                              "(use a new --data folder for %d)" % (eh["partitions"], partitions))
        if retention_hours is not None and retention_hours != eh["retentionHours"]:
            eh["retentionHours"] = retention_hours
            write_json(eh_path, eh)
    else:
        n = DEFAULT_PARTITIONS if partitions is None else partitions
        if not 1 <= n <= MAX_PARTITIONS:
            raise ConfigError("--partitions must be between 1 and %d" % MAX_PARTITIONS)
        eh = {"name": "iothub-ehub-%s" % hub_name, "partitions": n, "consumerGroups": [DEFAULT_GROUP],
              "created": time.time(),
              "retentionHours": DEFAULT_RETENTION_HOURS if retention_hours is None else retention_hours}
        write_json(eh_path, eh)
    if not os.path.exists(pol_path):
        write_json(pol_path, {p: new_key() for p in EXTRA_POLICIES}, mode=0o600)
    return eh


def load(data_dir):
    eh_path, _ = _paths(data_dir)
    try:
        eh = read_json(eh_path)
        n = int(eh["partitions"])
        groups = list(eh["consumerGroups"])
        eh["name"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError("cannot read %s (%s); start the hub once to create it" % (eh_path, exc)) from None
    try:   # a folder from before retention: the default
        hours = float(eh.get("retentionHours", DEFAULT_RETENTION_HOURS))
        check_retention(hours)
    except (ValueError, TypeError, ConfigError):
        raise ConfigError("cannot read %s (retentionHours must be a number of hours from 1 to %d)"
                          % (eh_path, MAX_RETENTION_HOURS)) from None
    eh["partitions"], eh["consumerGroups"], eh["retentionHours"] = n, groups, hours
    return eh


def hub_name(eh):
    """The IoT hub's name (the event hub is named iothub-ehub-{name}, as IoT Hub names it)."""
    return eh["name"][len("iothub-ehub-"):] if eh["name"].startswith("iothub-ehub-") else eh["name"]


def policy_keys(data_dir):
    """{policy: key} for every policy, iothubowner included."""
    _, pol_path = _paths(data_dir)
    keys = dict(read_json(pol_path))
    keys["iothubowner"] = read_json(os.path.join(data_dir, "service.json"))["key"]
    return keys


def add_consumer_group(data_dir, name):
    eh = load(data_dir)
    if not name or len(name) > 50 or not all(c.isalnum() or c in "-._" for c in name):
        raise ConfigError("a consumer group name is 1-50 letters, digits, '-', '.' or '_'")
    if any(g.lower() == name.lower() for g in eh["consumerGroups"]):
        raise ConfigError("consumer group %s already exists" % name)
    if len(eh["consumerGroups"]) > MAX_CONSUMER_GROUPS:
        raise ConfigError("a hub has at most %d consumer groups besides $Default" % MAX_CONSUMER_GROUPS)
    eh["consumerGroups"].append(name)
    write_json(_paths(data_dir)[0], eh)
    return eh


def remove_consumer_group(data_dir, name):
    eh = load(data_dir)
    if name == DEFAULT_GROUP:
        raise ConfigError("$Default cannot be removed")
    if name not in eh["consumerGroups"]:
        raise ConfigError("no consumer group %s" % name)
    eh["consumerGroups"].remove(name)
    write_json(_paths(data_dir)[0], eh)
    return eh


def connection_strings(data_dir, host, api_port, amqp_port):
    """The two strings the Azure portal shows, for this local hub.

    On the default ports (443, 5671) they are all a client needs. Otherwise: the service string's
    HostName carries the HTTPS port (the registry REST calls use it); `eventHubEndpoint` is what
    azure-eventhub takes as custom_endpoint_address (it ignores a port in Endpoint=); and
    `amqpPort` is for uamqp, which always dials 5671 (host_tools.cloud.azure.c2d handles it)."""
    keys = policy_keys(data_dir)
    eh = load(data_dir)
    hub_host = host if api_port in (None, 443) else "%s:%d" % (host, api_port)
    return {
        "service": "HostName=%s;SharedAccessKeyName=service;SharedAccessKey=%s" % (hub_host, keys["service"]),
        "eventHub": "Endpoint=sb://%s/;SharedAccessKeyName=service;SharedAccessKey=%s;EntityPath=%s"
                    % (host, keys["service"], eh["name"]),
        "eventHubEndpoint": None if amqp_port in (None, 5671) else "sb://%s:%d" % (host, amqp_port),
        "eventHubName": eh["name"],
        "partitions": eh["partitions"],
        "amqpPort": amqp_port,
        "apiPort": api_port,
        "caFile": os.path.abspath(os.path.join(data_dir, "certs", "ca.pem")),
    }
