"""Issue 9: the firmware on the unix MicroPython registers itself with the local DPS, caches the
assignment, re-registers when the hub refuses it, and survives a DPS it cannot reach."""
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from host_tools.cloud import tokens
from tests.cloud.hub.conftest import REPO, HubHandle
from tests.integration.conftest import DEADLINE, SKU
from tests.integration.device_harness import DeviceProcess


@pytest.fixture
def hub(tmp_path):
    """The `hub` of tests/integration, with DPS answering retry-after=1 (Azure says 3)."""
    h = HubHandle(tmp_path / "hub", extra_args=("--dps-retry-after", "1")).start()
    try:
        yield h
    finally:
        h.stop()


def _cli(*args, stdin=""):
    p = subprocess.run([sys.executable, "-m", "host_tools", *args], cwd=REPO, input=stdin,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _dps_device(hub, tmp_path, reg_id, dps_port=None):
    group = json.loads(_cli("dps", "group", "add", "shop", "--data", hub.data_dir))
    folder = tmp_path / reg_id
    _cli("provision", "--dps", "--id-scope", group["idScope"], "--registration-id", reg_id,
         "--dps-host", "127.0.0.1", "--hub-data", hub.data_dir, "--out", str(folder),
         stdin=group["primaryKey"] + "\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["retry_cap_s"] = 2
    if dps_port:
        cfg["dps"]["port"] = dps_port
    (folder / "config.json").write_text(json.dumps(cfg))
    secrets = json.loads((folder / "secrets.json").read_text())
    assert secrets == {"device_key": tokens.derive_key(group["primaryKey"], reg_id)}   # never the group key
    return DeviceProcess(folder), group


def _operations(hub):
    db = sqlite3.connect(os.path.join(hub.data_dir, "dps.sqlite3"))
    try:
        return db.execute("SELECT COUNT(*) FROM operations").fetchone()[0]
    finally:
        db.close()


def test_fresh_device_registers_connects_and_orders_then_boots_from_the_cached_assignment(
        hub, order_service, tmp_path):
    dev, _ = _dps_device(hub, tmp_path, "button-dps")
    svc = order_service()
    svc.profile("button-dps")
    svc.start()
    try:
        dev.start()
        dev.wait_screen("registering")
        e = dev.wait(lambda e: e.get("dps") == "registered", what="DPS assignment")
        assert (e["hub"], e["device_id"]) == ("127.0.0.1", "button-dps")
        dev.wait_online()
        assert json.loads(open(os.path.join(dev.dir, "assignment.json")).read())["device_id"] == "button-dps"
        hub.service.update_desired("button-dps", {"sku": SKU})   # the device exists now
        dev.wait_screen("ready")
        mark = dev.mark()
        dev.gesture("press")
        dev.wait_screen("delivered", timeout=DEADLINE + 10, since=mark)
        assert [o["status"] for o in svc.orders("button-dps")] == ["delivered"]
        assert dev.stop() == 0
        # next boot: the cached assignment, straight to the hub, no DPS traffic
        ops = _operations(hub)
        mark = dev.mark()
        dev.start()
        dev.wait_online(since=mark)
        assert not dev.find("dps", since=mark)
        assert _operations(hub) == ops
        assert dev.stop() == 0
    finally:
        dev.stop()
        dev.close()


def test_revoked_credentials_make_it_register_again_and_come_back_online(hub, tmp_path):
    dev, _ = _dps_device(hub, tmp_path, "button-rev")
    try:
        dev.start()
        dev.wait_online()
        mark = dev.mark()
        hub.service.delete_device("button-rev")      # the hub forgets it: CONNACK 5 from now on
        dev.wait(lambda e: e.get("link") == "auth_error", since=mark, what="hub refusal")
        dev.wait(lambda e: e.get("dps") == "re-register", since=mark, what="re-registration")
        dev.wait(lambda e: e.get("dps") == "registered", since=mark, what="new assignment")
        dev.wait_online(since=mark)
        assert hub.service.get_device("button-rev")["status"] == "enabled"
        assert len(dev.find("dps", since=mark)) == 3          # re-register, registering, registered
        assert dev.running()
    finally:
        dev.stop()
        dev.close()


def test_dps_unreachable_is_bounded_retries_and_a_clear_screen(hub, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()
    dev, _ = _dps_device(hub, tmp_path, "button-off", dps_port=closed_port)
    try:
        dev.start()
        for _ in range(4):      # four failed attempts, each waited for in turn
            mark = dev.wait(lambda e: e.get("dps") == "unreachable", timeout=DEADLINE,
                            since=None if _ == 0 else mark, what="a failed registration")
            mark = dev.events.index(mark) + 1
        fails = [e for e in dev.find("dps") if e["dps"] == "unreachable"]
        assert all(0 < e["retry_in"] <= 2 for e in fails), fails       # retry_cap_s bounds it
        scr = [e for e in dev.find("screen") if e["screen"] == "registering"][-1]
        assert scr["lines"][0] == "Registering..."
        assert not dev.find("crash") and not dev.find("link") and dev.running()
        assert dev.stop() == 0
    finally:
        dev.stop()
        dev.close()


@pytest.mark.parametrize("fault", ["dps_register=429:2", "dps_status=429:2"])
def test_throttled_registration_waits_retry_after_then_registers(hub, tmp_path, fault):
    # DPS over its rate limits answers 429 with retry-after (here 1 s, the hub's
    # --dps-retry-after): the device says so, waits at least that long before it tries again
    # (on a throttled poll too: a new registration), and gets through once DPS serves it
    dev, _ = _dps_device(hub, tmp_path, "button-busy")
    hub.service.inject_faults([fault])
    try:
        dev.start()
        e = dev.wait(lambda e: e.get("dps") == "registered", what="DPS assignment")
        assert e["device_id"] == "button-busy"
        dev.wait_online()
        assert hub.service.faults() == {}                         # both 429s reached the device
        dps = dev.find("dps")
        busy = [i for i, e in enumerate(dps) if e["dps"] == "busy"]
        assert len(busy) == 2, dps
        for i in busy:
            e = dps[i]
            assert (e["reason"], e["retry_after"]) == ("DPS 429", 1), e
            assert 1 <= e["retry_in"] <= 2, e       # the retry-after, spread; retry_cap_s bounds it
            again = dps[i + 1]
            assert again["dps"] == "registering"
            assert again["t"] - e["t"] >= 1, (e, again)           # not before the retry-after
        scr = [e for e in dev.find("screen") if e["screen"] == "registering"]
        assert any(e["lines"][2].startswith("busy, wait ") for e in scr), scr
        assert not dev.find("crash") and dev.running()
        assert dev.stop() == 0
    finally:
        dev.stop()
        dev.close()


def test_a_disabled_enrollment_shows_refused_and_backs_off(hub, tmp_path):
    dev, group = _dps_device(hub, tmp_path, "button-no")
    _cli("dps", "disable", "shop", "--data", hub.data_dir)
    try:
        dev.start()
        e = dev.wait(lambda e: e.get("dps") == "refused", what="refusal")
        assert e["reason"] == "disabled" and e["retry_in"] >= 30
        dev.wait_screen("refused")
        assert dev.running() and not dev.find("link")
    finally:
        dev.stop()
        dev.close()


def test_an_assigned_hub_that_does_not_resolve_makes_it_register_again(hub, tmp_path):
    dev, group = _dps_device(hub, tmp_path, "button-dns")
    cfg = json.loads(open(os.path.join(dev.dir, "config.json")).read())
    # a cached assignment naming a hub that is gone (.invalid never resolves)
    dev.write("assignment.json", json.dumps({"registration_id": "button-dns",
                                             "id_scope": cfg["dps"]["id_scope"],
                                             "host": "gone-hub.invalid", "device_id": "button-dns"}))
    try:
        dev.start()
        e = dev.wait(lambda e: e.get("dps") == "re-register", what="re-registration")
        assert e["why"] == "host not found"
        dev.wait(lambda e: e.get("dps") == "registered", what="new assignment")
        dev.wait_online()
        assert json.loads(open(os.path.join(dev.dir, "assignment.json")).read())["host"] == "127.0.0.1"
    finally:
        dev.stop()
        dev.close()
