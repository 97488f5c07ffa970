"""`provision --dps` (the device registers itself; only its derived key goes on it) and
`provision --azure` (the device created with the official azure-iot-hub registry client, here
against the local hub's service API), with their bad input."""
import json
import os
import subprocess
import sys

from host_tools.fleet import trust
from host_tools.cloud import tokens
from tests.cloud.hub.conftest import REPO, hub  # noqa: F401  (fixture)

GROUP_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def run(*args, stdin="", env=None):
    return subprocess.run([sys.executable, "-m", "host_tools", *args], input=stdin, cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)


def _folder_text(dev):
    return "".join(open(os.path.join(dev, n), errors="replace").read() for n in os.listdir(dev))


def test_dps_for_azure_writes_the_derived_key_only_and_the_three_roots(tmp_path):
    dev = tmp_path / "dev"
    r = run("provision", "--dps", "--id-scope", "0ne00012345", "--registration-id", "button-17",
            "--out", str(dev), stdin=GROUP_KEY + "\n")
    assert r.returncode == 0, r.stderr
    assert json.loads((dev / "secrets.json").read_text()) == {
        "device_key": tokens.derive_key(GROUP_KEY, "button-17")}
    assert GROUP_KEY not in _folder_text(str(dev)) + r.stdout + r.stderr
    cfg = json.loads((dev / "config.json").read_text())
    assert cfg["dps"] == {"id_scope": "0ne00012345", "registration_id": "button-17",
                          "host": "global.azure-devices-provisioning.net", "port": 8883}
    assert "host" not in cfg and "device_id" not in cfg
    assert (dev / "ca.der").read_bytes() == b"".join(trust.azure_roots())


def test_dps_for_the_local_hub_uses_its_port_and_root_and_an_individual_key_as_is(tmp_path):
    hub_dir, dev = tmp_path / "hub", tmp_path / "dev"
    hub_dir.mkdir()
    (hub_dir / "hub.json").write_text(json.dumps({"host": "127.0.0.1", "mqtt_port": 18883}))
    # an earlier device-id config in the folder: replaced by the DPS identity
    dev.mkdir()
    (dev / "config.json").write_text(json.dumps({"host": "old", "device_id": "old", "port": 1}))
    (dev / "assignment.json").write_text("{}")
    r = run("provision", "--dps", "--individual", "--id-scope", "0ne0000AAAA", "--registration-id",
            "solo", "--dps-host", "127.0.0.1", "--hub-data", str(hub_dir), "--out", str(dev),
            stdin=GROUP_KEY + "\n")
    assert r.returncode == 0, r.stderr
    assert json.loads((dev / "secrets.json").read_text()) == {"device_key": GROUP_KEY}
    cfg = json.loads((dev / "config.json").read_text())
    assert cfg["dps"]["host"] == "127.0.0.1" and cfg["dps"]["port"] == 18883 and cfg["port"] == 18883
    assert "host" not in cfg and "device_id" not in cfg
    assert not (dev / "assignment.json").exists()
    assert (dev / "ca.der").read_bytes() == (hub_dir / "certs" / "ca.der").read_bytes()


def test_dps_bad_input_is_one_line_and_writes_nothing(tmp_path):
    dev = tmp_path / "dev"
    base = ["provision", "--dps", "--out", str(dev)]
    cases = [
        (["--registration-id", "b1"], GROUP_KEY, "--dps needs --id-scope"),
        (["--id-scope", "0ne1", "--registration-id", "Button_1!"], GROUP_KEY, "--registration-id: lowercase"),
        (["--id-scope", "0ne1"], GROUP_KEY, "--dps needs --registration-id"),
        (["--id-scope", "0ne1", "--registration-id", "b1"], "not*base64", "group key on standard input is not valid base64"),
        (["--id-scope", "0ne1", "--registration-id", "b1"], "", "no group key on standard input"),
        (["--id-scope", "0ne1", "--registration-id", "b1", "--device", "d"], GROUP_KEY, "leave out --device"),
        (["--id-scope", "0ne1", "--registration-id", "b1", "--host", "h.example"], GROUP_KEY, "leave out --azure and --host"),
    ]
    for extra, stdin, message in cases:
        r = run(*base, *extra, stdin=stdin + "\n")
        assert r.returncode == 2, (extra, r.stdout)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (extra, r.stderr)
        assert "not*base64" not in r.stderr and GROUP_KEY not in r.stderr
    assert not dev.exists()


def _azure_env(hub):
    # the official registry client verifies the hub's HTTPS with requests' CA bundle
    return dict(os.environ, REQUESTS_CA_BUNDLE=hub.ca_pem, PYTHONPATH=REPO)


def test_azure_creates_the_device_with_the_official_registry_client(hub, tmp_path):
    cs = tmp_path / "service.cs"
    cs.write_text(hub.service_connection_string() + "\n")
    dev = tmp_path / "dev"
    r = run("provision", "--azure", "--connection-string-file", str(cs), "--device", "button-az",
            "--out", str(dev), env=_azure_env(hub))
    assert r.returncode == 0, r.stderr
    key = json.loads((dev / "secrets.json").read_text())["device_key"]
    assert hub.service.get_device("button-az")["primaryKey"] == key
    cfg = json.loads((dev / "config.json").read_text())
    assert (cfg["host"], cfg["port"], cfg["device_id"]) == ("127.0.0.1", 8883, "button-az")
    assert (dev / "ca.der").read_bytes() == b"".join(trust.azure_roots())
    secret = hub.service_connection_string().split("SharedAccessKey=")[1]
    assert secret not in _folder_text(str(dev)) + r.stdout + r.stderr
    # again: the existing device is read, its key kept
    r = run("provision", "--azure", "--connection-string-file", str(cs), "--device", "button-az",
            "--out", str(tmp_path / "dev2"), "--ca", hub.ca_pem, "--port", str(hub.mqtt_port),
            env=_azure_env(hub))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "dev2" / "secrets.json").read_text())["device_key"] == key
    assert (tmp_path / "dev2" / "ca.der").read_bytes() == open(hub.ca_der, "rb").read()


def test_azure_bad_input_is_one_line(hub, tmp_path):
    good = hub.service_connection_string()
    wrong_key = good.split("SharedAccessKey=")[0] + "SharedAccessKey=" + GROUP_KEY
    closed = good.replace(":%d;" % hub.api_port, ":1;")
    cases = [
        (None, "cannot read connection string file"),
        ("HostName=x.azure-devices.net;DeviceId=d;SharedAccessKey=" + GROUP_KEY, "not an IoT Hub service connection string"),
        (wrong_key, "refused: HTTP 401"),
        (closed, "cannot reach the IoT Hub"),
    ]
    for i, (text, message) in enumerate(cases):
        path = tmp_path / ("cs%d" % i)
        if text is not None:
            path.write_text(text)
        r = run("provision", "--azure", "--connection-string-file", str(path), "--device", "d-%d" % i,
                "--out", str(tmp_path / ("dev%d" % i)), env=_azure_env(hub))
        assert r.returncode == 2 and message in r.stderr, (text, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert GROUP_KEY not in r.stderr
        assert not (tmp_path / ("dev%d" % i)).exists()
    r = run("provision", "--azure", "--device", "d", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "--azure needs --connection-string-file" in r.stderr
