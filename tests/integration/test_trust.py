"""Issue 9: the firmware trusts every root of its CA bundle, so a root change does not strand it.
The local hub serves root -> intermediate -> server, as Azure does."""
import json
import subprocess
import sys

from host_tools.fleet import trust
from host_tools.files import write_atomic
from tests.cloud.hub.conftest import REPO, wait_for


def test_a_device_trusting_only_another_root_fails_and_with_the_bundle_it_connects(device, hub):
    azure = trust.azure_roots()
    dev = device("button-1")
    dev.write("ca.der", azure[0])              # only DigiCert Global Root G2: not the hub's root
    dev.start()

    def refused():
        return [e for e in dev.find("link") if e["link"] == "connect_failed"
                and "not correctly signed by the trusted CA" in e["reason"]]
    try:
        wait_for(lambda: len(refused()) >= 2, timeout=30, what="two refused TLS handshakes")
    except AssertionError as e:
        raise AssertionError("%s; the device said:\n%s" % (e, dev.tail(12))) from None
    assert not [e for e in dev.find("link") if e["link"] == "online"] and dev.running()
    assert dev.stop() == 0
    # the bundle: the three Azure roots and, last, the root the hub chains to; every one is
    # trusted (MicroPython's cadata would take only the first of certificates back to back)
    with open(hub.ca_der, "rb") as f:
        trust.write_bundle(dev.dir, azure + [f.read()], write_atomic)
    mark = dev.mark()
    dev.start()
    dev.wait_online(since=mark)
    assert dev.stop() == 0


def _reported_trust(hub, device_id, want):
    def got():   # null deletes a reported key: no version is no key, once the device reported
        rep = hub.service.get_twin(device_id)["properties"]["reported"]
        return "freeHeap" in rep and rep.get("trustStoreVersion") == want
    wait_for(got, timeout=30, what="reported trustStoreVersion %r" % want)


def test_the_device_reports_its_trust_store_version_for_the_fleet_to_see(device, hub):
    # Before a hub's root changes, the fleet must know which devices hold which roots: each
    # device reports its bundle's version (ca.json), without any update having run
    dev = device("button-1")
    dev.start()
    dev.wait_online()
    _reported_trust(hub, "button-1", None)              # a folder from before bundles: none
    assert dev.stop() == 0
    with open(hub.ca_der, "rb") as f:
        hub_root = f.read()
    azure = trust.azure_roots()
    assert trust.write_bundle(dev.dir, azure + [hub_root], write_atomic) == 1
    mark = dev.mark()
    dev.start()
    dev.wait_online(since=mark)
    _reported_trust(hub, "button-1", "1")
    assert dev.stop() == 0
    assert trust.write_bundle(dev.dir, azure[:1] + [hub_root], write_atomic) == 2   # roots changed
    mark = dev.mark()
    dev.start()
    dev.wait_online(since=mark)
    _reported_trust(hub, "button-1", "2")
    p = subprocess.run([sys.executable, "-m", "host_tools", "ota", "status", "--json", "--data", hub.data_dir],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    row = [json.loads(line) for line in p.stdout.splitlines() if "button-1" in line][0]
    assert row["trustStoreVersion"] == "2"
    assert dev.stop() == 0
