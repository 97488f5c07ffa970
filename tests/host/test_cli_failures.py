"""Each host-tool failure a user can run into ends with one line on stderr, a non-zero exit
and nothing changed: the folders involved (every file's bytes and mode) are identical before
and after, and so is the registry."""
import json
import os
import pty
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from host_tools import processes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, stdin="", env=None):
    return subprocess.run([sys.executable, "-m", "host_tools", *args], input=stdin, cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


def snapshot(*roots):
    """Every path under roots -> (mode, bytes or None for a folder); a missing root -> None."""
    out = {}
    for root in map(str, roots):
        if not os.path.lexists(root):
            out[root] = None
            continue
        if not os.path.isdir(root):
            out[root] = (os.stat(root).st_mode, open(root, "rb").read())
            continue
        for folder, dirs, files in os.walk(root):
            out[folder] = (os.stat(folder).st_mode, None)
            for name in files:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    out[path] = (os.stat(path).st_mode, f.read())
    return out


def fails_cleanly(args, *roots, stdin="", needle=None):
    """Run a command that must fail: one line, exit 2, nothing under roots changed."""
    before = snapshot(*roots)
    r = run(*args, stdin=stdin)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    if needle:
        assert needle in r.stderr, r.stderr
    assert snapshot(*roots) == before
    return r.stderr


@pytest.fixture
def hub_dir(tmp_path):
    """A hub folder as `registry add` makes it, with one device."""
    data = tmp_path / "hub"
    r = run("registry", "add", "button-1", "--data", str(data))
    assert r.returncode == 0, r.stderr
    return data


def registry(data):
    db = sqlite3.connect(str(data / "hub.sqlite3"))
    try:
        return db.execute("SELECT d.device_id, primary_key, status, desired, desired_version"
                          " FROM devices d JOIN twins t USING (device_id) ORDER BY 1").fetchall()
    finally:
        db.close()


# ---- a corrupt database --------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_hub_database_is_one_line_for_every_command_and_is_left_alone(hub_dir, tmp_path, damage):
    db = hub_dir / "hub.sqlite3"
    con = sqlite3.connect(str(db))   # enough rows for several pages, then cut it in the middle
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.executemany("INSERT INTO events (device_id, enqueued, system_props, app_props, body)"
                    " VALUES ('button-1', 0, '{}', '{}', ?)", [(os.urandom(300),) for _ in range(200)])
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = db.read_bytes()
    db.write_bytes(os.urandom(4096) if damage == "garbage" else data[:len(data) // 2])
    dev = tmp_path / "dev"
    for args in (["registry", "list"], ["registry", "add", "button-2"], ["registry", "show", "button-1"],
                 ["registry", "remove", "button-1"], ["hub", "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"]):
        fails_cleanly(args + ["--data", str(hub_dir)], hub_dir, needle="hub.sqlite3")
    fails_cleanly(["provision", "--device", "button-1", "--out", str(dev), "--hub-data", str(hub_dir)],
                  hub_dir, dev, needle="hub.sqlite3")


@pytest.mark.parametrize("service", ["orders", "commerce"])
def test_a_corrupt_orders_or_commerce_database_is_one_line_and_is_left_alone(tmp_path, service):
    data = tmp_path / service
    data.mkdir(mode=0o700)
    (data / (service + ".sqlite3")).write_bytes(os.urandom(4096))
    commands = [["list"], ["show", "X-1"]]
    if service == "commerce":
        commands.append(["serve", "--port", "0"])
    for args in commands:
        fails_cleanly([service, *args, "--data", str(data)], data, needle=service + ".sqlite3")


def test_a_corrupt_dps_database_is_one_line_and_is_left_alone(hub_dir):
    (hub_dir / "dps.sqlite3").write_bytes(os.urandom(4096))
    for args in (["dps", "list"], ["dps", "scope"], ["dps", "group", "add", "g"],
                 ["hub", "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"]):
        fails_cleanly(args + ["--data", str(hub_dir)], hub_dir, needle="dps.sqlite3")


def test_dps_on_a_missing_folder_is_one_line_and_makes_no_hub(tmp_path):
    for args in (["dps", "list"], ["dps", "scope"], ["dps", "disable", "g"]):
        fails_cleanly(args + ["--data", str(tmp_path / "typo")], tmp_path, needle="no hub data folder")


# ---- a truncated CA certificate ---------------------------------------------------------------

def test_a_truncated_ca_pem_is_one_line_for_the_service_commands(hub_dir):
    (hub_dir / "hub.json").write_text(json.dumps({"host": "127.0.0.1", "mqtt_port": 1, "api_port": 1,
                                                  "amqp_port": 1}))
    pem = hub_dir / "certs" / "ca.pem"
    pem.write_bytes(pem.read_bytes()[:300])
    for args in (["twin", "show", "button-1"], ["c2d", "send", "button-1", "--body", "x"],
                 ["monitor"], ["method", "invoke", "button-1", "ping"],
                 ["twin", "set-desired", "button-1", "{}"]):
        fails_cleanly(args + ["--data", str(hub_dir)], hub_dir, needle="ca.pem")


def test_certs_does_not_keep_a_damaged_set_and_force_replaces_it(tmp_path):
    out = tmp_path / "certs"
    assert run("certs", "--out", str(out)).returncode == 0
    pem = out / "ca.pem"
    whole = pem.read_bytes()
    pem.write_bytes(whole[:len(whole) // 2])
    fails_cleanly(["certs", "--out", str(out)], out, needle="ca.pem")
    pem.write_bytes(whole)
    key = out / "server.key"
    key.write_bytes((out / "ca.key").read_bytes())   # a whole key, but not the certificate's
    fails_cleanly(["certs", "--out", str(out)], out, needle="server.key does not belong")
    (out / "server.der").unlink()
    fails_cleanly(["certs", "--out", str(out)], out, needle="server.der")
    r = run("certs", "--out", str(out), "--force")
    assert r.returncode == 0 and "created" in r.stdout, r.stderr
    assert "kept existing" in run("certs", "--out", str(out)).stdout


def test_the_hub_refuses_damaged_certificates_in_one_line(hub_dir):
    key = hub_dir / "certs" / "server.key"
    key.write_bytes(key.read_bytes()[:100])
    fails_cleanly(["hub", "--data", str(hub_dir), "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"], hub_dir,
                  needle="server.key")


# ---- folders that are files or cannot be made ---------------------------------------------------

def test_a_data_or_out_folder_that_is_a_file_or_cannot_be_made(tmp_path, hub_dir):
    afile = tmp_path / "a-file"
    afile.write_text("not a folder\n")
    dev = tmp_path / "dev"
    cases = [
        ["registry", "add", "b", "--data", str(afile)],
        ["registry", "add", "b", "--data", str(afile / "sub")],
        ["registry", "list", "--data", str(afile)],
        ["registry", "add", "b", "--data", "/proc/no-such-hub"],
        ["certs", "--out", str(afile)],
        ["certs", "--out", str(afile / "sub")],
        ["certs", "--out", "/proc/no-such-certs"],
        ["hub", "--data", str(afile), "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"],
        ["provision", "--device", "b", "--out", str(afile), "--hub-data", str(hub_dir)],
        ["provision", "--device", "b", "--out", str(afile / "sub"), "--hub-data", str(hub_dir)],
        ["provision", "--device", "b", "--out", str(dev), "--hub-data", str(afile)],
    ]
    for args in cases:
        fails_cleanly(args, afile, hub_dir, dev)


def test_provision_into_an_impossible_folder_leaves_the_registry_alone(tmp_path, hub_dir):
    before = registry(hub_dir)
    fails_cleanly(["provision", "--device", "button-new", "--out", "/proc/x", "--hub-data", str(hub_dir),
                   "--sku", "COFFEE-1KG"], hub_dir)
    fails_cleanly(["provision", "--device", "button-1", "--out", "/proc/x", "--hub-data", str(hub_dir),
                   "--sku", "COFFEE-1KG", "--quantity", "3"], hub_dir)
    assert registry(hub_dir) == before
    # and a hub folder that did not exist is not made by a provision that fails
    fails_cleanly(["provision", "--device", "b", "--out", "/proc/x", "--hub-data", str(tmp_path / "new-hub")],
                  tmp_path / "new-hub")


def test_provision_that_fails_after_the_folder_is_made_removes_what_it_made(tmp_path, hub_dir):
    # the hub folder's certificates are damaged: found after the device folder was made
    (hub_dir / "certs" / "ca.der").write_bytes(b"\x30\x82")
    dev = tmp_path / "new" / "dev"
    fails_cleanly(["provision", "--device", "b", "--out", str(dev), "--hub-data", str(hub_dir)],
                  hub_dir, tmp_path / "new", needle="ca.der")


def test_read_only_registry_commands_do_not_make_a_hub_folder(tmp_path):
    typo = tmp_path / "TYPO"
    for args in (["registry", "list"], ["registry", "show", "b"], ["registry", "remove", "b"],
                 ["registry", "disable", "b"]):
        fails_cleanly(args + ["--data", str(typo)], typo, needle="registry add")
    assert not typo.exists()


# ---- values provision refuses -------------------------------------------------------------------

@pytest.mark.parametrize("extra, needle", [
    (["--port", "99999"], "--port"),
    (["--port", "0"], "--port"),
    (["--quantity", "-3"], "--quantity"),
    (["--quantity", "100"], "--quantity"),
    (["--sku", "COFFEE-1KG", "--quantity", "50"], "at most"),
    (["--token-ttl", "0"], "--token-ttl"),
    (["--token-ttl", "999999999"], "--token-ttl"),
    (["--sku", "NO-SUCH-THING"], "not in the catalogue"),
    (["--sku", "bad sku!"], "--sku"),
    (["--wifi-ssid", "x" * 33], "--wifi-ssid"),
])
def test_provision_refuses_bad_values_before_changing_anything(tmp_path, hub_dir, extra, needle):
    dev = tmp_path / "dev"
    before = registry(hub_dir)
    fails_cleanly(["provision", "--device", "button-9", "--out", str(dev), "--hub-data", str(hub_dir)] + extra,
                  hub_dir, dev, needle=needle)
    assert registry(hub_dir) == before


def test_a_sku_from_another_catalogue_is_accepted_with_that_catalogue(tmp_path, hub_dir):
    cat = json.loads(open(os.path.join(REPO, "host_tools", "cloud", "orders", "catalogue.json")).read())
    cat["products"]["TEA-100"] = dict(next(iter(cat["products"].values())))
    (tmp_path / "cat.json").write_text(json.dumps(cat))
    r = run("provision", "--device", "b", "--out", str(tmp_path / "dev"), "--hub-data", str(hub_dir),
            "--sku", "TEA-100", "--catalogue", str(tmp_path / "cat.json"))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("key, needle", [
    ("A" * 6_600_000, "longer than"),
    ("not base64 at all!", "base64"),
    ("c2hvcnQ=", "bytes"),                        # 5 bytes
    ("QUFB" * 30, "bytes"),                       # 90 bytes
])
def test_provision_for_azure_refuses_bad_keys_without_showing_them(tmp_path, key, needle):
    dev = tmp_path / "dev"
    err = fails_cleanly(["provision", "--device", "b", "--out", str(dev), "--host", "x.azure-devices.net"],
                        dev, stdin=key + "\n", needle=needle)
    assert key[:20] not in err


def test_a_huge_wlan_password_is_refused(tmp_path, hub_dir):
    dev = tmp_path / "dev"
    fails_cleanly(["provision", "--device", "b", "--out", str(dev), "--hub-data", str(hub_dir),
                   "--wifi-ssid", "shop"], hub_dir, dev, stdin="p" * 5000 + "\n", needle="WLAN password")


# ---- secrets typed at a terminal --------------------------------------------------------------

def _run_on_a_terminal(args, answers, timeout=60):
    """Run a command with a pseudo-terminal as its terminal, typing each (prompt, text) of
    `answers` once its prompt shows. Returns (exit status, everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "host_tools", *args])
    shown, seen_upto, deadline = b"", 0, time.monotonic() + timeout
    answers = list(answers)
    try:
        while time.monotonic() < deadline:
            if answers and answers[0][0].encode() in shown[seen_upto:]:
                seen_upto = len(shown)
                os.write(fd, answers.pop(0)[1].encode() + b"\r")
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:       # the child closed the terminal: it has exited
                    break
                if not chunk:
                    break
                shown += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_keys_and_wlan_passwords_typed_at_a_terminal_are_not_echoed(tmp_path):
    key = "VGhpcyBpcyBhIHNlY3JldCBkZXZpY2Uga2V5IQ=="
    password = "correct-horse-battery"
    dev = tmp_path / "dev"
    code, shown = _run_on_a_terminal(
        ["provision", "--device", "b", "--out", str(dev), "--host", "x.azure-devices.net",
         "--wifi-ssid", "shop"], [("device key:", key), ("WLAN password:", password)])
    assert code == 0, shown
    assert "device key:" in shown and "WLAN password:" in shown
    assert key not in shown and password not in shown
    secrets = json.loads((dev / "secrets.json").read_text())
    assert secrets["device_key"] == key and secrets["wifi_password"] == password
    assert stat.S_IMODE(os.stat(dev / "secrets.json").st_mode) == 0o600


# ---- the hub process -------------------------------------------------------------------------

def test_a_hub_killed_with_sigkill_does_not_block_the_next_one(tmp_path):
    data = str(tmp_path / "hub")
    args = ["hub", "--data", data, "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"]
    first, _ = processes.start(args, str(tmp_path / "1.log"), name="hub")
    second = None
    try:
        os.kill(first.pid, signal.SIGKILL)
        # not reaped yet: its pid is still taken (a zombie), as a PID file would see it
        deadline = time.monotonic() + 10
        while open("/proc/%d/stat" % first.pid).read().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert json.load(open(os.path.join(data, "hub.json")))["pid"] == first.pid   # left behind
        second, info = processes.start(args, str(tmp_path / "2.log"), name="hub")
        assert info["api_port"]
        # and the live one still keeps a third away, in one line
        r = run(*args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "already running" in r.stderr
    finally:
        processes.stop(first)
        processes.stop(second)


def test_a_hub_stopped_under_a_long_poll_logs_no_traceback(tmp_path):
    # the long poll is a telemetry reader on the Event Hubs-compatible endpoint (AMQP): the
    # hub has no HTTP long poll any more (issue 8)
    from host_tools.cloud.hub.service_client import ServiceClient
    import threading
    data = str(tmp_path / "hub")
    log = tmp_path / "hub.log"
    hub, info = processes.start(["hub", "--data", data, "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"],
                                str(log), name="hub")
    client = ServiceClient.from_data_dir(data)
    polling = threading.Thread(target=lambda: _ignore(lambda: client.events(-1, timeout=30)), daemon=True)
    polling.start()
    try:
        deadline = time.monotonic() + 20        # the reader has reached the hub: wait for the socket
        while not _connected_to(hub.pid, info["amqp_port"]):
            assert time.monotonic() < deadline, "the long poll never connected"
            time.sleep(0.05)
        assert processes.stop(hub) == 0
    finally:
        processes.stop(hub)
    polling.join(30)
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hub: ready."), lines


def _ignore(fn):
    try:
        fn()
    except Exception:
        pass


def _connected_to(pid, port):
    # an established TCP connection to the hub's API port, from /proc/net/tcp (state 01)
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(r[2].endswith(":%04X" % port) and r[3] == "01" for r in rows)


def test_a_service_that_fails_to_start_quotes_only_its_own_run(tmp_path):
    log = tmp_path / "hub.log"
    log.write_text("Traceback (most recent call last):\nSomethingOld: from a run long ago\n")
    afile = tmp_path / "a-file"
    afile.write_text("")
    with pytest.raises(processes.ServiceFailed) as exc:
        processes.start(["hub", "--data", str(afile), "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"], str(log),
                        name="hub")
    assert "SomethingOld" not in str(exc.value) and "not a folder" in str(exc.value)


def test_malformed_requests_are_answered_400_and_log_no_traceback(tmp_path):
    import socket
    import ssl
    data, log = str(tmp_path / "hub"), tmp_path / "hub.log"
    hub, info = processes.start(["hub", "--data", data, "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"], str(log),
                                name="hub")
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(data, "certs", "ca.pem"))
        for bad in (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", info["api_port"])),
                                 server_hostname="localhost") as s:
                s.settimeout(10)
                s.sendall(bad)
                head = s.recv(64)
                assert head.startswith(b"HTTP/1.") and b" 400 " in head, head
        assert processes.stop(hub) == 0
    finally:
        processes.stop(hub)
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hub: ready."), lines
