"""A local hub (with its DPS) for the official SDKs, whose port is fixed at 8883.

Like tests/cloud/hub's hub_8883, but DPS answers registers with retry-after=1 (Azure says 3) so
each registration costs the SDK one second of waiting, not three."""
import json
import subprocess
import sys

import pytest

from tests.cloud.hub.conftest import REPO, hub_on_8883

RETRY_AFTER = 1


@pytest.fixture(scope="module")
def dps_hub(tmp_path_factory):
    with hub_on_8883(tmp_path_factory, "dps8883", ("--dps-retry-after", str(RETRY_AFTER))) as handle:
        yield handle


def cli(*args, stdin=""):
    """`python -m host_tools ARGS` -> (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "host_tools", *args], cwd=REPO, input=stdin,
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def enroll(hub, kind, name, *extra):
    rc, out, err = cli("dps", kind, "add", name, "--data", hub.data_dir, *extra)
    assert rc == 0, err
    return json.loads(out)
