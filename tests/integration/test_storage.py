"""firmware/runtime/storage.py on CPython and on the unix MicroPython: atomic writes, reads
that survive a cut write, clear setup errors that never contain a secret; and the device
keeping a corrupt state blob aside."""
import json
import os
import subprocess

from firmware.runtime import storage
from tests.integration.device_harness import REPO, micropypath, micropython


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = str(tmp_path / "state.json")
    storage.write_atomic(p, b'{"a": 1}')
    storage.write_atomic(p, b'{"a": 2}')
    assert storage.read_bytes(p) == b'{"a": 2}'
    assert os.listdir(tmp_path) == ["state.json"]


def test_power_cut_before_rename_keeps_the_old_file(tmp_path):
    p = str(tmp_path / "state.json")
    storage.write_atomic(p, b'{"a": 1}')
    with open(p + ".tmp", "w") as f:          # a write cut short
        f.write('{"a": ')
    assert storage.read_bytes(p) == b'{"a": 1}'


def test_power_cut_between_remove_and_rename_falls_back_to_the_temp(tmp_path):
    p = str(tmp_path / "state.json")
    with open(p + ".tmp", "w") as f:
        f.write('{"a": 3}')
    assert storage.read_bytes(p) == b'{"a": 3}'
    assert storage.read_bytes(str(tmp_path / "other.json")) is None


def test_storage_ships_only_what_the_device_uses():
    # code on the device costs flash and RAM: these were used by tests only
    for name in ("exists", "load_json", "save_json", "_set_aside"):
        assert not hasattr(storage, name), name


def test_setup_errors_say_what_to_do_and_never_show_the_key(tmp_path):
    d = str(tmp_path)
    e = _setup_error(storage.load_config, d)
    assert "config.json missing" in e and "host_tools provision" in e
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"host": "h", "device_id": "d", "port": "8883"}, f)
    assert "port must be a positive integer" in _setup_error(storage.load_config, d)
    with open(os.path.join(d, "secrets.json"), "w") as f:
        f.write('{"device_key": "c2VjcmV0LWtleQ==" oops')
    e = _setup_error(storage.load_secrets, d)
    assert "secrets.json is not valid JSON" in e and "c2VjcmV0" not in e
    with open(os.path.join(d, "secrets.json"), "w") as f:
        json.dump({"device_key": ""}, f)
    assert "no device_key" in _setup_error(storage.load_secrets, d)


def _real_ca(tmp_path):
    from host_tools.cloud.hub import certs
    p, _ = certs.ensure(str(tmp_path / "certs"))
    with open(p["ca.der"], "rb") as f:
        der = f.read()
    with open(p["ca.pem"], "rb") as f:
        return der, f.read()


def test_config_does_not_hold_or_check_what_the_twin_sets(tmp_path):
    # sku and quantity come from the device twin: an old config's unused "quantity": 0
    # must not block setup, and config has no defaults for them
    with open(os.path.join(str(tmp_path), "config.json"), "w") as f:
        json.dump({"host": "h", "device_id": "d", "quantity": 0}, f)
    cfg = storage.load_config(str(tmp_path))
    assert cfg["host"] == "h" and cfg["port"] == 8883 and "sku" not in cfg


def test_ca_in_pem_is_converted_to_der(tmp_path):
    der, pem = _real_ca(tmp_path)
    (tmp_path / "ca.pem").write_bytes(pem)
    (tmp_path / "ca.der").write_bytes(der)
    assert storage.load_ca(str(tmp_path), {"ca_file": "ca.pem"}) == (der,)
    assert storage.load_ca(str(tmp_path), {"ca_file": "ca.der"}) == (der,)


def test_a_bundle_gives_every_certificate(tmp_path):
    # issue 9: the device trusts several roots; a PEM file's later certificates used to be dropped
    from host_tools.fleet import trust
    der, pem = _real_ca(tmp_path)
    roots = trust.azure_roots()
    d = str(tmp_path)
    (tmp_path / "b.der").write_bytes(b"".join(roots) + der)
    assert storage.load_ca(d, {"ca_file": "b.der"}) == tuple(roots) + (der,)
    (tmp_path / "b.pem").write_bytes(pem + pem)
    assert storage.load_ca(d, {"ca_file": "b.pem"}) == (der, der)
    (tmp_path / "cut.der").write_bytes(roots[0] + der[:-10])
    assert "not a CA certificate" in _setup_error(storage.load_ca, d, {"ca_file": "cut.der"})
    from host_tools.files import write_atomic
    trust.write_bundle(d, roots, write_atomic)      # ca.der + ca.json, as provision writes them
    assert storage.load_ca(d, {"ca_file": "ca.der"}) == tuple(roots)


def test_trust_version_is_ca_json_version_or_none(tmp_path):
    # the trust store's version as the device reports it (trustStoreVersion): a string; a folder
    # without ca.json, or with a broken one, has none and is no setup error
    from host_tools.fleet import trust
    from host_tools.files import write_atomic
    d = str(tmp_path)
    assert storage.trust_version(d) is None
    trust.write_bundle(d, trust.azure_roots(), write_atomic)
    assert storage.trust_version(d) == "1"
    trust.write_bundle(d, trust.azure_roots()[:2], write_atomic)     # other roots: version 2
    assert storage.trust_version(d) == "2"
    for bad in (b"", b"{", b"[1]", b'"x"', b"{}", b'{"version": null}'):
        (tmp_path / "ca.json").write_bytes(bad)
        assert storage.trust_version(d) is None, bad


def test_a_broken_ca_is_a_setup_error(tmp_path):
    # bad base64 in a PEM, a PEM of something else, DER that is no certificate: all say
    # what to do instead of crashing the device (binascii.Error, ssl "invalid cert")
    d = str(tmp_path)
    for name, data in (("bad64.pem", b"-----BEGIN CERTIFICATE-----\nabc!@#$\n-----END CERTIFICATE-----\n"),
                       ("short.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                       ("junk.der", b"\x30\x82garbage that is not a certificate")):
        (tmp_path / name).write_bytes(data)
        e = _setup_error(storage.load_ca, d, {"ca_file": name})
        assert name in e and "not a CA certificate" in e and "host_tools provision" in e, e


def _setup_error(fn, *args):
    try:
        fn(*args)
    except storage.SetupError as e:
        return str(e)
    raise AssertionError("no SetupError")


def test_same_behaviour_on_micropython(tmp_path):
    der, _ = _real_ca(tmp_path)
    script = """
from firmware.runtime import storage
d = %r
p = d + "/s.json"
storage.write_atomic(p, b"1")
storage.write_atomic(p, b"22")
assert storage.read_bytes(p) == b"22"
import os
assert "s.json.tmp" not in os.listdir(d)
open(p + ".tmp", "w").write("3")
assert storage.read_bytes(p) == b"22"
os.remove(p)
assert storage.read_bytes(p) == b"3"
try:
    storage.load_secrets(d)
except storage.SetupError as e:
    assert "secrets.json missing" in str(e)
open(d + "/ca.der", "wb").write(%r)
assert storage.load_ca(d, {"ca_file": "ca.der"}) == (%r,)
open(d + "/two.der", "wb").write(%r * 2)
assert len(storage.load_ca(d, {"ca_file": "two.der"})) == 2
for bad in (b"garbage", b"-----BEGIN CERTIFICATE-----\\nabc!\\n-----END CERTIFICATE-----\\n"):
    open(d + "/bad", "wb").write(bad)
    try:
        storage.load_ca(d, {"ca_file": "bad"})
        raise AssertionError("no SetupError")
    except storage.SetupError as e:
        assert "not a CA certificate" in str(e)
assert storage.trust_version(d) is None
for data, v in ((b'{"version": 7, "certs": []}', "7"), (b"[1]", None), (b"{", None), (b'"x"', None)):
    open(d + "/ca.json", "wb").write(data)
    assert storage.trust_version(d) == v, data
print("ok")
""" % (str(tmp_path), der, der, der)
    r = subprocess.run([micropython(), "-c", script], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=micropypath()), timeout=30)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_a_corrupt_state_is_kept_aside_before_a_clean_one_is_saved_over_it(device):
    # the real device: the .corrupt copy is written before restore's save action replaces
    # state.json, so a power cut between the two never loses the only copy
    dev = device("button-1")
    bad = b'{"v": 1, "orders": {"0123456789abcdef": ['
    dev.write("state.json", bad)
    dev.start()
    dev.wait_online()
    kept = dev.wait(lambda e: "state_corrupt" in e, what="state_corrupt")
    saved = dev.wait(lambda e: "saved" in e, what="saved")
    assert dev.events.index(kept) < dev.events.index(saved), dev.tail()
    with open(os.path.join(str(dev.dir), "state.json.corrupt"), "rb") as f:
        assert f.read() == bad
    with open(os.path.join(str(dev.dir), "state.json"), "rb") as f:
        assert json.loads(f.read())        # a clean blob replaced it


def test_start_up_only_code_leaves_the_heap_once_used(tmp_path):
    # issue 11: run from .mpy files (a stock image) bytecode lives in the GC heap. storage's
    # loaders and the stored blob's checks (app/stored.py) serve start-up only (as does
    # runtime/start.py, which calls them): the device drops them once set up and restored, and
    # imports them again when it needs them again.
    der, _ = _real_ca(tmp_path)
    d = tmp_path / "dev"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"host": "127.0.0.1", "device_id": "d"}))
    (d / "secrets.json").write_text(json.dumps({"device_key": "c2VjcmV0LWtleQ=="}))
    (d / "ca.der").write_bytes(der)
    script = """
import sys
import firmware.app, firmware.runtime
from firmware.app import gestures, orders
from firmware.hal import Hal
from firmware.iothub import sas
from firmware.runtime import device, start
dev = device.Device(Hal(gestures, sas.epoch_offset))
assert start._setup(dev) and dev.link is not None
assert "firmware.runtime.storage" not in sys.modules and not hasattr(firmware.runtime, "storage")
now = 1800000000
s = orders.new("1")
blob = orders._blob(s)
orders.restore(s, now, blob)
assert "firmware.app.stored" in sys.modules
device.release("firmware.app", "stored")
assert "firmware.app.stored" not in sys.modules and not hasattr(firmware.app, "stored")
s = orders.new("1")
orders.restore(s, now, b"junk")
assert orders.ignored(s) == {"blob": 1}
from firmware.runtime import storage
assert storage.load_ca(%r, {"ca_file": "ca.der"}) == (%r,)
print("ok")
""" % (str(d), der)
    r = subprocess.run([micropython(), "-c", script], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=micropypath(), ORDER_DEVICE_DIR=str(d),
                                ORDER_DEVICE_DISPLAY="framebuf"), timeout=30)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
