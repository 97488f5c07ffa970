"""Fixtures for the firmware-on-MicroPython tests: a real hub, the real order service CLI, and
device processes (tests/integration/device_harness.py)."""
import json
import os
import subprocess
import sys

import pytest

from host_tools import processes
from tests.cloud.hub.conftest import hub, running_hub, wait_for  # noqa: F401  (the `hub` fixture)
from tests.integration.device_harness import REPO, DeviceProcess

DEADLINE = 20
SKU = "COFFEE-1KG"


def orders_cli(data, *args):
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "host_tools", "orders", *args, "--data", data],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class OrderService:
    """`python -m host_tools orders serve` as a process, with a customer profile per device."""

    def __init__(self, hub, data, timeline, extra=()):
        self.hub, self.data, self.timeline, self.extra = hub, data, timeline, list(extra)
        self.proc = None

    def profile(self, device_id):
        orders_cli(self.data, "profile", "set", device_id, "--name", "Ada", "--address",
                   "1 Main St", "--shipping-method", "standard", "--payment-token", "tok_visa_4242")

    def start(self):
        self.proc, _ = processes.start(
            ["orders", "serve", "--hub-data", self.hub.data_dir, "--data", self.data,
             "--poll-timeout", "0.2", "--timeline", self.timeline, *self.extra],
            self.data + ".stderr", timeout=DEADLINE, name="orders serve")
        return self

    def stop(self):
        processes.stop(self.proc, DEADLINE)
        self.proc = None

    def orders(self, device_id=None):
        args = ["list", "--json"] + (["--device", device_id] if device_id else [])
        return [json.loads(line) for line in orders_cli(self.data, *args).splitlines() if line.strip()]


@pytest.fixture
def order_service(hub, tmp_path):
    """order_service(timeline) -> a running OrderService (stopped at the end)."""
    made = []

    def make(timeline="payment_authorized=1,shipped=2,delivered=3", *extra):
        svc = OrderService(hub, str(tmp_path / "orders"), timeline, extra)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.stop()


@pytest.fixture
def device(hub, tmp_path):
    """device(device_id, key=None, sku=SKU, **config) -> a provisioned, not yet started
    DeviceProcess; the hub registers the device and its twin gets the sku."""
    made = []

    def make(device_id="button-1", key=None, sku=SKU, env=None, heapsize=None, **config):
        real_key = hub.add_device(device_id)
        if sku:
            hub.service.update_desired(device_id, {"sku": sku})
        dev = DeviceProcess(tmp_path / device_id, heapsize=heapsize, env=env)
        dev.provision(hub, device_id, key or real_key, **config)
        dev.device_key = real_key
        made.append(dev)
        return dev

    yield make
    for dev in made:
        dev.stop()
        dev.close()
