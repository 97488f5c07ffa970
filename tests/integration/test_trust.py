"""Issue 9: the firmware trusts every root of its CA bundle, so a root change does not strand it.
The local hub serves root -> intermediate -> server, as Azure does."""
from host_tools.fleet import trust
from host_tools.files import write_atomic
from tests.cloud.hub.conftest import wait_for


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
