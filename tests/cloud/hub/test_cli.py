"""`python -m host_tools` commands of the hub: certs, registry, hub, monitor, c2d, twin, method."""
import json
import os
import signal
import ssl
import stat
import subprocess
import sys

import pytest

from host_tools import processes
from tests.cloud.hub.conftest import REPO
from tests.cloud.hub.mqtt_peer import Peer


def cli(*args, check=True, timeout=60):
    r = subprocess.run([sys.executable, "-m", "host_tools", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_certs_are_made_once_and_verify(tmp_path):
    out = tmp_path / "certs"
    cli("certs", "--out", str(out))
    files = {p.name for p in out.iterdir()}
    assert {"ca.pem", "ca.der", "server.pem", "server.key", "server.der", "ca.key"} <= files
    assert _mode(out / "server.key") == 0o600 and _mode(out / "ca.key") == 0o600
    before = (out / "ca.der").read_bytes()
    assert "kept" in cli("certs", "--out", str(out)).stdout
    assert (out / "ca.der").read_bytes() == before
    cli("certs", "--out", str(out), "--force")
    assert (out / "ca.der").read_bytes() != before

    from cryptography import x509
    cert = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # issue 9: root -> intermediate -> server, like Azure's chain; server.pem serves the chain
    ca = x509.load_der_x509_certificate((out / "ca.der").read_bytes())
    chain = x509.load_pem_x509_certificates((out / "server.pem").read_bytes())
    intermediate = x509.load_pem_x509_certificate((out / "intermediate.pem").read_bytes())
    assert [c.subject for c in chain] == [cert.subject, intermediate.subject]
    cert.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(ca)
    assert intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert _mode(out / "intermediate.key") == 0o600


def test_registry_commands(tmp_path):
    data = str(tmp_path / "hub")
    r = cli("registry", "add", "button-1", "--data", data)
    assert r.stdout.strip() == "button-1 enabled"
    assert "SharedAccessKey" not in r.stdout
    assert _mode(os.path.join(data, "hub.sqlite3")) == 0o600
    assert _mode(os.path.join(data, "service.json")) == 0o600
    cs = cli("registry", "show", "button-1", "--data", data, "--show-connection-string").stdout.strip()
    assert cs.startswith("HostName=127.0.0.1;DeviceId=button-1;SharedAccessKey=")
    import base64
    assert len(base64.b64decode(cs.split("SharedAccessKey=")[1])) == 32
    assert "button-1" in cli("registry", "list", "--data", data).stdout
    assert cli("registry", "disable", "button-1", "--data", data).stdout.strip() == "button-1 disabled"
    assert cli("registry", "enable", "button-1", "--data", data).stdout.strip() == "button-1 enabled"

    dup = cli("registry", "add", "button-1", "--data", data, check=False)
    assert dup.returncode == 2 and dup.stderr.count("\n") == 1 and "already exists" in dup.stderr
    cli("registry", "remove", "button-1", "--data", data)
    gone = cli("registry", "show", "button-1", "--data", data, check=False)
    assert gone.returncode == 2 and "not registered" in gone.stderr
    bad = cli("registry", "add", "no/slash", "--data", data, check=False)
    assert bad.returncode == 2 and "invalid device id" in bad.stderr


def test_hub_prints_one_json_line_writes_hub_json_and_stops_on_sigterm(tmp_path):
    data = str(tmp_path / "hub")
    p, info = processes.start(["hub", "--data", data, "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"],
                              str(tmp_path / "hub.stderr"), 30, name="hub")
    try:
        assert set(info) == {"host", "mqtt_port", "api_port", "amqp_port"} and info["host"] == "127.0.0.1"
        with open(os.path.join(data, "hub.json")) as f:
            written = json.load(f)
        assert written["mqtt_port"] == info["mqtt_port"] and written["pid"] == p.pid
        # all ports speak TLS with the hub's CA
        ctx = ssl.create_default_context(cafile=os.path.join(data, "certs", "ca.pem"))
        import socket
        for port in (info["mqtt_port"], info["api_port"], info["amqp_port"]):
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10),
                                 server_hostname="127.0.0.1") as s:
                assert s.version() in ("TLSv1.2", "TLSv1.3")
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
        assert not os.path.exists(os.path.join(data, "hub.json"))
    finally:
        processes.stop(p)


def test_hub_stops_on_ctrl_c(tmp_path):
    data, log = str(tmp_path / "hub"), tmp_path / "hub.stderr"
    p, _ = processes.start(["hub", "--data", data, "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"],
                           str(log), 30, name="hub")
    try:
        p.send_signal(signal.SIGINT)
        assert p.wait(15) == 0
        # the sentence saying where it listens, and nothing else (no traceback on the way out)
        lines = log.read_text().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hub: ready.") and "service API: https://" in lines[0]
    finally:
        processes.stop(p)


def test_service_commands_need_a_running_hub(tmp_path):
    data = str(tmp_path / "nohub")
    for args in (["twin", "show", "d"], ["c2d", "send", "d", "--body", "x"], ["c2d", "purge", "d"], ["monitor"],
                 ["method", "invoke", "d", "m"]):
        r = cli(*args, "--data", data, check=False)
        assert r.returncode == 2, args
        assert r.stderr.startswith("error: no hub is running") and r.stderr.count("\n") == 1


def test_c2d_twin_monitor_through_the_cli(hub):
    key = hub.add_device("cli-1")
    peer = Peer(hub, "cli-1", key=key)
    assert peer.connect() == 0
    peer.subscribe("devices/cli-1/messages/devicebound/#", "$iothub/twin/PATCH/properties/desired/#")

    r = cli("c2d", "send", "cli-1", "--body", '{"s":1}', "--prop", "order=o 1", "--content-type",
            "application/json", "--message-id", "cm-1", "--data", hub.data_dir)
    assert r.stdout.strip() == "queued cm-1"
    topic, body, _ = peer.wait_message("devices/cli-1/messages/devicebound/")
    assert body == b'{"s":1}' and "%24.mid=cm-1" in topic and "%24.ct=application%2Fjson" in topic
    assert topic.endswith("&order=o%201")

    cli("twin", "set-desired", "cli-1", '{"led": "blue"}', "--data", hub.data_dir)
    topic, body, _ = peer.wait_message("$iothub/twin/PATCH/properties/desired/")
    assert json.loads(body) == {"led": "blue", "$version": 2}
    shown = json.loads(cli("twin", "show", "cli-1", "--data", hub.data_dir).stdout)
    assert shown["properties"]["desired"]["led"] == "blue"

    peer.publish("devices/cli-1/messages/events/%24.mid=t1&kind=press", b"pressed", qos=1)
    mon = cli("monitor", "--device", "cli-1", "--from-start", "--count", "1", "--data", hub.data_dir)
    event = json.loads(mon.stdout)
    assert event["body"] == "pressed" and event["properties"] == {"kind": "press"}
    assert event["systemProperties"]["messageId"] == "t1"
    # a person is told it is ready and where, on stderr (stdout stays one JSON line per message)
    assert mon.stderr.startswith("monitor: ready") and ":%d" % hub.amqp_port in mon.stderr  # telemetry is read over AMQP
    peer.close()


def test_c2d_purge_through_the_cli_empties_the_queue(hub):
    hub.add_device("cli-p")
    for i in range(2):
        cli("c2d", "send", "cli-p", "--body", "x%d" % i, "--data", hub.data_dir)
    r = cli("c2d", "purge", "cli-p", "--data", hub.data_dir)
    assert r.stdout.strip() == "purged 2 messages"
    assert cli("c2d", "purge", "cli-p", "--data", hub.data_dir).stdout.strip() == "purged 0 messages"
    r = cli("c2d", "purge", "ghost", "--data", hub.data_dir, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "ghost" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["twin", "set-desired", "ghost", "{}"], "not registered"),
    (["twin", "set-desired", "d", "{oops"], "not valid JSON"),
    (["twin", "set-desired", "d", "[1]"], "must be a JSON object"),
    (["method", "invoke", "d", "m", "--payload", "{x"], "not valid JSON"),
    (["method", "invoke", "d", "m"], "not connected"),
    (["c2d", "send", "ghost", "--body", "x"], "Device ghost not found"),  # the AMQP refusal
    (["c2d", "send", "d", "--body", "x", "--prop", "novalue"], "KEY=VALUE"),
])
def test_cli_errors_are_one_clear_line(hub, args, needle):
    hub.add_device("d")
    r = cli(*args, "--data", hub.data_dir, check=False)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_second_hub_on_same_data_or_port_is_one_clear_line(hub, tmp_path):
    same_dir = cli("hub", "--data", hub.data_dir, "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0", check=False)
    assert same_dir.returncode == 2 and same_dir.stderr.count("\n") == 1
    assert "already running" in same_dir.stderr
    taken = cli("hub", "--data", str(tmp_path / "other"), "--mqtt-port", str(hub.mqtt_port),
                "--api-port", "0", "--amqp-port", "0", check=False)
    assert taken.returncode == 2 and taken.stderr.count("\n") == 1
    assert "cannot listen for MQTT" in taken.stderr
    # the first hub is untouched
    assert os.path.exists(os.path.join(hub.data_dir, "hub.json"))
    assert hub.service.list_devices() == []


def test_device_added_with_the_cli_while_the_hub_runs_can_connect(hub):
    cs = cli("registry", "add", "live-1", "--data", hub.data_dir, "--show-connection-string").stdout.strip()
    key = cs.split("SharedAccessKey=")[1]
    peer = Peer(hub, "live-1", key=key)
    assert peer.connect() == 0
    cli("registry", "disable", "live-1", "--data", hub.data_dir)
    peer.close()
    assert Peer(hub, "live-1", key=key).connect() == 5
