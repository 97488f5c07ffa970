"""The firmware against the ESP32 port's published API: basedpyright (the pyright checker, run from
its PyPI wheel, which brings its own Node.js) with micropython-esp32-stubs, both pinned (make setup
installs the stubs into .esp32-stubs/; pyrightconfig.esp32.json says what is checked and how).
Only the rules about APIs are on: unknown modules, attributes and call signatures, so a call the
ESP32 port does not have fails the tests, and untyped code stays legal. Argument types are off:
on untyped code pyright infers container types from their first use and then refuses the rest
(a list of 2-tuples given a 4-tuple), which says nothing about the port."""
import json
import os
import shutil
import subprocess

import pytest

from host_tools.processes import REPO

CONFIG = os.path.join(REPO, "pyrightconfig.esp32.json")
STUBS = os.path.join(REPO, ".esp32-stubs")
PYRIGHT = os.path.join(REPO, ".venv", "bin", "basedpyright")

# Each line is a call the ESP32 port does not have (or not with these arguments); appended to a
# copy of firmware/hal/esp32.py, every one must be reported on its own line.
PLANTED = [
    "machine.WDT(timeout=1000).stop()",                      # a WDT cannot be stopped
    "machine.Pin(4, machine.Pin.IN, machine.Pin.PULL_UPP)",  # no such constant
    "network.WLAN(network.STA_IF).connect_async('ssid')",    # no such method
    "machine.I2C(0, sda=machine.Pin(21)).writevto(60)",      # writevto needs its buffers
    "machine.Pin(4).irq(handler=None, edge=1)",              # no such keyword
    "machine.reset(True)",                                   # takes no argument (and never returns:
]                                                            # last, or the rest is unreachable)


def check(root, config):
    if not os.path.exists(PYRIGHT) or not os.path.isdir(STUBS):
        pytest.fail("basedpyright or .esp32-stubs missing: run make setup")
    r = subprocess.run([PYRIGHT, "-p", config, "--outputjson"], cwd=root, capture_output=True,
                       text=True, timeout=300)
    report = json.loads(r.stdout)
    return r.returncode, [d for d in report["generalDiagnostics"] if d["severity"] == "error"]


def test_the_firmware_calls_only_what_the_esp32_port_has():
    code, errors = check(REPO, CONFIG)
    assert code == 0 and not errors, "\n".join(
        "%s:%d %s" % (os.path.relpath(e["file"], REPO), e["range"]["start"]["line"] + 1, e["message"])
        for e in errors)


def test_the_check_catches_planted_misuses(tmp_path):
    shutil.copytree(os.path.join(REPO, "firmware"), tmp_path / "firmware",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(CONFIG) as f:
        config = json.load(f)
    config["typeshedPath"] = config["stubPath"] = STUBS
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    hal = tmp_path / "firmware" / "hal" / "esp32.py"
    text = hal.read_text()
    hal.write_text(text + "\n\ndef _planted():\n    import machine, network\n"
                   + "".join("    %s\n" % line for line in PLANTED))
    numbered = hal.read_text().splitlines()
    planted = {numbered.index("    " + line) + 1 for line in PLANTED}
    code, errors = check(tmp_path, str(tmp_path / "pyrightconfig.json"))
    lines = {e["range"]["start"]["line"] + 1 for e in errors if e["file"].endswith("esp32.py")}
    assert code != 0
    assert lines == planted, errors
