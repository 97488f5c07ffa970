"""`provision` and `deploy`, run as a user runs them; the device's own loader reads the result."""
import json
import os
import shlex
import stat
import subprocess
import sys

import pytest

from host_tools.cloud.hub.store import Store

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MICROPYTHON = os.environ.get("MICROPYTHON", os.path.join(REPO, ".venv", "bin", "micropython"))


def run(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "host_tools", *args], input=stdin, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_local_provision_registers_the_device_and_writes_a_folder_the_firmware_loads(tmp_path):
    hub, dev = tmp_path / "hub", tmp_path / "dev"
    r = run("provision", "--device", "button-1", "--out", str(dev), "--hub-data", str(hub),
            "--sku", "COFFEE-1KG", "--quantity", "2")
    assert r.returncode == 0, r.stderr
    store = Store(str(hub / "hub.sqlite3"))
    key = store.get_device("button-1")["primary_key"]
    desired = store.get_twin("button-1")["desired"]
    store.close()
    assert desired == {"sku": "COFFEE-1KG", "quantity": 2}  # the twin is where the device reads them
    assert key not in r.stdout + r.stderr
    secrets = json.loads((dev / "secrets.json").read_text())
    assert secrets == {"device_key": key}
    assert mode(dev / "secrets.json") == 0o600
    cfg = json.loads((dev / "config.json").read_text())
    assert cfg == {"host": "127.0.0.1", "port": 8883, "device_id": "button-1", "ca_file": "ca.der"}
    assert (dev / "ca.der").read_bytes() == (hub / "certs" / "ca.der").read_bytes()
    # the firmware's own loader accepts it, on the real interpreter
    script = ("from firmware.runtime import storage as s\n"
              "d=%r\nc=s.load_config(d)\nk=s.load_secrets(d)\nca=s.load_ca(d,c)\n"
              "print(c['device_id'], c['port'], len(k['device_key']), ca[0][:1] == b'0')\n" % str(dev))
    out = subprocess.run([MICROPYTHON, "-c", script], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, MICROPYPATH=".frozen:" + REPO))
    assert out.stdout.split() == ["button-1", "8883", str(len(key)), "True"], out.stderr


def test_provision_again_keeps_the_key_and_the_settings_not_given(tmp_path):
    hub, dev = tmp_path / "hub", tmp_path / "dev"
    assert run("provision", "--device", "b", "--out", str(dev), "--hub-data", str(hub), "--sku", "FILTER-3PK").returncode == 0
    first = (dev / "secrets.json").read_text()
    (hub / "hub.json").write_text(json.dumps({"host": "127.0.0.1", "mqtt_port": 18883, "api_port": 1}))
    r = run("provision", "--device", "b", "--out", str(dev), "--hub-data", str(hub), "--token-ttl", "20")
    assert r.returncode == 0, r.stderr
    assert (dev / "secrets.json").read_text() == first
    cfg = json.loads((dev / "config.json").read_text())
    assert cfg["token_ttl_s"] == 20 and cfg["port"] == 18883
    store = Store(str(hub / "hub.sqlite3"))
    assert store.get_twin("b")["desired"]["sku"] == "FILTER-3PK"   # kept in the twin
    store.close()


def test_azure_provision_reads_the_key_from_stdin_and_uses_the_public_root(tmp_path):
    dev = tmp_path / "dev"
    key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    r = run("provision", "--device", "d1", "--out", str(dev), "--host", "myhub.azure-devices.net",
            "--wifi-ssid", "shop", stdin=key + "\nwlan-pass\n")
    assert r.returncode == 0, r.stderr
    assert key not in r.stdout + r.stderr
    assert json.loads((dev / "secrets.json").read_text()) == {
        "device_key": key, "wifi_ssid": "shop", "wifi_password": "wlan-pass"}
    cfg = json.loads((dev / "config.json").read_text())
    assert (cfg["host"], cfg["port"]) == ("myhub.azure-devices.net", 8883)
    # issue 9: the three roots Microsoft asks devices to trust, one bundle, with its manifest
    from host_tools.fleet import trust
    roots = trust.azure_roots()
    assert (dev / "ca.der").read_bytes() == b"".join(roots)
    manifest = json.loads((dev / "ca.json").read_text())
    assert manifest["version"] == 1
    assert [c["sha256"] for c in manifest["certs"]] == [fp for _, fp in trust.AZURE_ROOTS]


def test_bad_key_and_broken_files_are_one_clear_line(tmp_path):
    dev = tmp_path / "dev"
    r = run("provision", "--device", "d1", "--out", str(dev), "--host", "h.example", stdin="not*base64\n")
    assert r.returncode == 2 and r.stderr.startswith("error: the device key is not valid base64")
    assert "not*base64" not in r.stderr
    r = run("provision", "--device", "d1", "--out", str(dev), "--host", "h.example", stdin="")
    assert r.returncode == 2 and "no device key" in r.stderr
    dev.mkdir(exist_ok=True)
    (dev / "config.json").write_text("{broken")
    r = run("provision", "--device", "d1", "--out", str(dev), "--hub-data", str(tmp_path / "hub"))
    assert r.returncode == 2 and "config.json is not readable JSON" in r.stderr
    assert (dev / "config.json").read_text() == "{broken"  # nothing overwritten on error
    assert not (tmp_path / "hub" / "hub.sqlite3").exists()  # and nothing registered either
    r = run("provision", "--device", "bad/id", "--out", str(tmp_path / "d2"), "--hub-data", str(tmp_path / "hub"))
    assert r.returncode == 2 and "invalid device id" in r.stderr


def _provisioned(tmp_path):
    dev = tmp_path / "dev"
    assert run("provision", "--device", "b", "--out", str(dev), "--hub-data", str(tmp_path / "hub")).returncode == 0
    return dev


def _steps(pasted):
    # the --dry-run text as a shell reads it: one argv, steps between the "+"
    argv = shlex.split(pasted.replace("\\\n", " "))
    i = argv.index("connect")
    steps, cur = [], None
    for a in argv[i + 2:]:
        if a == "+":
            cur = []
            steps.append(cur)
        else:
            cur.append(a)
    return argv[:i + 2], steps


def test_deploy_is_one_mpremote_session_that_a_person_can_paste(tmp_path):
    # issue 11: one session (mpremote's chained commands) instead of one connection per file
    dev = _provisioned(tmp_path)
    from host_tools.fleet import deploy
    built = [os.path.join(REPO, "build", "mpy", *p) for p in (("firmware",), ("lib", "umqtt", "simple.mpy"))]
    if not all(os.path.exists(p) for p in built):   # no build, or one from before make mpy built lib/
        with pytest.raises(Exception, match="make mpy"):
            deploy.deploy_plan(REPO, str(dev))
        subprocess.run(["make", "-s", "mpy"], cwd=REPO, check=True, capture_output=True)
    r = run("deploy", "--device-dir", str(dev), "--dry-run", "--port", "/dev/ttyUSB0")
    assert r.returncode == 0, r.stderr
    head, steps = _steps(r.stdout)
    assert head[-3:] == ["mpremote", "connect", "/dev/ttyUSB0"] and r.stdout.count("-m mpremote") == 1
    assert steps == deploy.deploy_plan(REPO, str(dev), "/dev/ttyUSB0")
    assert head + [a for s in steps for a in ["+"] + s] == deploy.command(steps, "/dev/ttyUSB0")
    assert steps[0][0] == "exec"                                   # prepare the board first
    assert ["fs", "cp", "-r", os.path.join(REPO, "build", "mpy", "firmware"), ":"] in steps
    assert ["fs", "cp", "-r", os.path.join(REPO, "build", "mpy", "lib"), ":"] in steps   # lib/umqtt/simple.mpy
    assert (dev / "ca.json").exists()       # provision writes the bundle's manifest too
    assert ["fs", "cp"] + [str(dev / n) for n in ("config.json", "secrets.json", "ca.der", "ca.json")] + [":/data/"] in steps
    assert steps[-2][-1] == ":" and steps[-2][2:4] == [os.path.join(REPO, "boot.py"), os.path.join(REPO, "main.py")]
    assert steps[-1] == ["reset"]


def test_deploy_to_a_frozen_image_copies_no_firmware(tmp_path):
    dev = _provisioned(tmp_path)
    r = run("deploy", "--device-dir", str(dev), "--dry-run", "--frozen")
    assert r.returncode == 0, r.stderr
    _, steps = _steps(r.stdout)
    copied = [a for s in steps if s[:2] == ["fs", "cp"] for a in s[2:-1]]
    assert sorted(os.path.basename(a) for a in copied) == ["boot.py", "ca.der", "ca.json", "config.json", "main.py", "secrets.json"]
    assert steps[0][0] == "exec" and steps[-1] == ["reset"]


def test_deploy_prepares_the_board_by_removing_old_firmware_and_umqtt_only(tmp_path):
    # the exec step, run by the real MicroPython in a folder laid out like a board's /
    from host_tools.fleet import deploy
    board = tmp_path / "board"
    for path in ("firmware/runtime/link.mpy", "firmware/__init__.py", "lib/umqtt/simple.mpy",
                 "lib/other.mpy", "data/state.json", "boot.py"):
        (board / path).parent.mkdir(parents=True, exist_ok=True)
        (board / path).write_text("x")
    script = deploy.deploy_plan(REPO, str(_provisioned(tmp_path)), frozen=True)[0][1]
    for _ in range(2):      # a second deploy finds nothing to remove
        r = subprocess.run([MICROPYTHON, "-c", script], cwd=board, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "board prepared" in r.stdout, r.stderr
    left = sorted(str(p.relative_to(board)) for p in board.rglob("*"))
    assert left == ["boot.py", "data", "data/state.json", "lib", "lib/other.mpy"]


def test_deploy_without_a_provisioned_folder_says_what_to_do(tmp_path):
    r = run("deploy", "--device-dir", str(tmp_path / "nothing"), "--dry-run")
    assert r.returncode == 2 and ("provision first" in r.stderr or "make mpy" in r.stderr)


def test_a_bad_ca_file_is_one_clear_line_and_changes_nothing(tmp_path):
    hub, dev = tmp_path / "hub", tmp_path / "dev"
    pem = tmp_path / "cut.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")        # truncated
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"\x30\x03abc")
    for ca in (pem, junk, tmp_path / "missing.pem"):
        r = run("provision", "--device", "b", "--out", str(dev), "--hub-data", str(hub), "--ca", str(ca))
        assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
        assert str(ca) in r.stderr
    assert not dev.exists() and not (hub / "hub.sqlite3").exists()
