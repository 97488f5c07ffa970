"""Fixtures that run a real local hub (a `python -m host_tools hub` process) on free ports.

Reuse from other test folders:
    from tests.cloud.hub.conftest import hub, running_hub    # noqa: F401  (fixture + context manager)

`hub` yields a HubHandle: host, mqtt_port, api_port, ca_pem, ca_der, data_dir, service (a
ServiceClient), and helpers add_device(), connection_string(), device_token(), restart().
"""
import os
import time
from contextlib import contextmanager

import pytest

from firmware.iothub import sas
from host_tools import processes
from host_tools.cloud.hub.service_client import ServiceClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
START_TIMEOUT = 30


class HubHandle:
    def __init__(self, data_dir, mqtt_port=0, api_port=0, host="127.0.0.1", connect_timeout=10,
                 amqp_port=0, partitions=None, extra_args=()):
        self.data_dir = str(data_dir)
        self.extra_args = list(extra_args)
        self.connect_timeout = connect_timeout
        self.host = host
        self._want = (mqtt_port, api_port, amqp_port)
        self.partitions = partitions
        self.proc = None
        self.mqtt_port = self.api_port = self.amqp_port = None
        self.ca_pem = os.path.join(self.data_dir, "certs", "ca.pem")
        self.ca_der = os.path.join(self.data_dir, "certs", "ca.der")
        self.service = None
        self.stderr_path = os.path.join(self.data_dir, "hub.stderr")

    # ---- process ----------------------------------------------------------------------
    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)
        self.proc, info = processes.start(
            ["hub", "--data", self.data_dir, "--host", self.host, "--mqtt-port", str(self._want[0]),
             "--api-port", str(self._want[1]), "--amqp-port", str(self._want[2]), "--verbose",
             "--connect-timeout", str(self.connect_timeout), *self.extra_args]
            + (["--partitions", str(self.partitions)] if self.partitions else []),
            self.stderr_path, START_TIMEOUT, name="hub")
        self.mqtt_port, self.api_port = info["mqtt_port"], info["api_port"]
        self.amqp_port = info["amqp_port"]
        self.service = ServiceClient.from_data_dir(self.data_dir)
        return self

    def stop(self):
        processes.stop(self.proc)
        self.proc = None

    def restart(self, same_ports=True):
        ports = (self.mqtt_port, self.api_port, self.amqp_port)
        self.stop()
        if same_ports:
            self._want = ports
        return self.start()


    # ---- helpers ----------------------------------------------------------------------
    def add_device(self, device_id):
        """Register a device through the service API; returns its primary key."""
        return self.service.create_device(device_id)["primaryKey"]

    def connection_string(self, device_id, key):
        return "HostName=%s;DeviceId=%s;SharedAccessKey=%s" % (self.host, device_id, key)

    def device_token(self, device_id, key, ttl=3600, host=None):
        host = host or self.host
        return sas.token(sas.device_resource(host, device_id), key, int(time.time()) + ttl)

    def username(self, device_id, host=None):
        return "%s/%s/?api-version=2021-04-12" % (host or self.host, device_id)

    def service_connection_string(self):
        return self.service.connection_string()


@contextmanager
def running_hub(data_dir, mqtt_port=0, api_port=0, connect_timeout=10, extra_args=()):
    handle = HubHandle(data_dir, mqtt_port, api_port, connect_timeout=connect_timeout,
                       extra_args=extra_args).start()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def hub(tmp_path):
    """A fresh hub on free ports in a temporary data folder."""
    with running_hub(tmp_path / "hub") as h:
        yield h


@pytest.fixture(scope="session")
def hub_8883(tmp_path_factory):
    """A hub for the official device SDK, whose MQTT port is fixed at 8883 (hub_on_8883)."""
    with hub_on_8883(tmp_path_factory, "hub8883") as handle:
        yield handle


@contextmanager
def hub_on_8883(tmp_path_factory, name, extra_args=()):
    """A hub whose MQTT port is 8883, in a new folder `name`.

    Normally the hub listens on 8883 itself (we are root). When 8883 is taken (another hub, a
    benchmark...) the hub takes a free port and, while this lasts, paho's connect() to
    127.0.0.1:8883 is pointed at it; HUB_TESTS_REQUIRE_8883=1 makes that case fail instead."""
    handle = HubHandle(tmp_path_factory.mktemp(name), mqtt_port=8883, extra_args=extra_args)
    restore = None
    try:
        handle.start()
    except processes.ServiceFailed as exc:
        if "cannot listen for MQTT" not in str(exc) or os.environ.get("HUB_TESTS_REQUIRE_8883"):
            raise
        handle = HubHandle(tmp_path_factory.mktemp(name + "-free"), mqtt_port=0,
                           extra_args=extra_args).start()
        restore = _redirect_8883(handle.mqtt_port)
    try:
        yield handle
    finally:
        handle.stop()
        if restore:
            restore()


def _redirect_8883(port):
    import paho.mqtt.client as mqtt
    original = mqtt.Client.connect

    def connect(self, host, *args, **kwargs):
        # port comes as a keyword (the SDK) or first positional; anything else passes through
        # untouched, so a second redirect (another session's hub) can wrap this one.
        given = kwargs.get("port", args[0] if args else 1883)
        if host in ("127.0.0.1", "localhost") and given == 8883:
            if "port" in kwargs:
                kwargs["port"] = port
            else:
                args = (port,) + args[1:]
        return original(self, host, *args, **kwargs)

    mqtt.Client.connect = connect

    def restore():
        mqtt.Client.connect = original
    return restore


def wait_for(predicate, timeout=10, interval=0.02, what="condition"):
    """Poll predicate() until it returns a truthy value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)
