"""A local hub (with its DPS) for the official SDKs, whose port is fixed at 8883.

Like tests/cloud/hub's hub_8883, but DPS answers registers with retry-after=1 (Azure says 3) so
each registration costs the SDK one second of waiting, not three."""
import json
import os
import subprocess
import sys

import pytest

from host_tools import processes
from tests.cloud.hub.conftest import REPO, HubHandle, _redirect_8883

RETRY_AFTER = 1


@pytest.fixture(scope="module")
def dps_hub(tmp_path_factory):
    extra = ("--dps-retry-after", str(RETRY_AFTER))
    handle = HubHandle(tmp_path_factory.mktemp("dps8883"), mqtt_port=8883, extra_args=extra)
    restore = None
    try:
        handle.start()
    except processes.ServiceFailed as exc:
        if "cannot listen for MQTT" not in str(exc) or os.environ.get("HUB_TESTS_REQUIRE_8883"):
            raise
        handle = HubHandle(tmp_path_factory.mktemp("dps8883-free"), mqtt_port=0, extra_args=extra).start()
        restore = _redirect_8883(handle.mqtt_port)
    try:
        yield handle
    finally:
        handle.stop()
        if restore:
            restore()


def cli(*args, stdin=""):
    """`python -m host_tools ARGS` -> (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "host_tools", *args], cwd=REPO, input=stdin,
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def enroll(hub, kind, name, *extra):
    rc, out, err = cli("dps", kind, "add", name, "--data", hub.data_dir, *extra)
    assert rc == 0, err
    return json.loads(out)
