"""firmware/manifest.py freezes everything the firmware imports, and boot.py's path order lets
the tested umqtt.simple in /lib win over a stock image's frozen one (issue 11)."""
import ast
import os
import subprocess

import pytest

from host_tools.harness.device_process import REPO, micropython

FIRMWARE = os.path.join(REPO, "firmware")
# What the firmware may import without freezing it: MicroPython's built-in modules, and what
# every ESP32 image freezes or builds in (ssl, ntptime from micropython-lib's networking bundle).
PROVIDED = {"binascii", "framebuf", "gc", "hashlib", "json", "machine", "micropython", "network",
            "ntptime", "os", "random", "select", "socket", "ssl", "struct", "sys", "time"}


def manifest_modules():
    """Run firmware/manifest.py as MicroPython's manifest tool does (its folder as the current
    directory) and return the module names it freezes."""
    frozen = []

    def package(name, files=None, base_path=".", opt=None):
        base = os.path.normpath(os.path.join(FIRMWARE, base_path))
        if files is None:
            files = [os.path.relpath(os.path.join(d, f), os.path.join(base, name))
                     for d, _, fs in os.walk(os.path.join(base, name)) for f in fs if f.endswith(".py")]
        for f in files:
            path = os.path.join(base, name, f)
            assert os.path.isfile(path), path
            frozen.append(os.path.join(name, f)[:-3].replace(os.sep, ".").replace(".__init__", ""))

    def module(path, base_path=".", opt=None):
        frozen.append(path[:-3].replace("/", "."))

    cwd = os.getcwd()
    os.chdir(FIRMWARE)
    try:
        with open("manifest.py") as f:
            exec(f.read(), {"package": package, "module": module})
    finally:
        os.chdir(cwd)
    return set(frozen)


def firmware_imports():
    """(importing module, imported module) for every import statement under firmware/."""
    for d, _, fs in os.walk(FIRMWARE):
        for f in fs:
            if f.endswith(".py") and f != "manifest.py":
                path = os.path.join(d, f)
                with open(path) as fh:
                    tree = ast.parse(fh.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        for a in node.names:
                            yield path, a.name
                    elif isinstance(node, ast.ImportFrom) and node.module:
                        yield path, node.module
                        for a in node.names:   # from firmware.iothub import sas: a module too
                            yield path, node.module + "." + a.name


def test_the_manifest_freezes_every_firmware_module_and_umqtt():
    frozen = manifest_modules()
    sources = {os.path.relpath(os.path.join(d, f), REPO)[:-3].replace(os.sep, ".").replace(".__init__", "")
               for d, _, fs in os.walk(FIRMWARE) for f in fs if f.endswith(".py") and f != "manifest.py"}
    assert sources <= frozen, sources - frozen
    assert "umqtt.simple" in frozen and "firmware.manifest" not in frozen
    # main.py imports ota_boot; over-the-air downloads use urequests, which imports ussl
    assert {"ota_boot", "urequests", "ussl"} <= frozen


def test_everything_the_firmware_imports_is_frozen_or_provided_by_the_image():
    frozen = manifest_modules()
    packages = {m.rsplit(".", 1)[0] for m in frozen if "." in m} | {m for m in frozen}
    missing = set()
    for path, name in firmware_imports():
        top = name.split(".")[0]
        if top in PROVIDED or name in frozen or name in packages:
            continue
        if name.rsplit(".", 1)[0] in frozen:    # from firmware.x import NAME: NAME is in module x
            continue
        missing.add((os.path.relpath(path, REPO), name))
    assert not missing, missing


def _mp32(*args):
    r = subprocess.run(["sh", os.path.join(REPO, "host_tools", "bench", "build32.sh"), *args], cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.skip((r.stderr.strip() or r.stdout.strip() or "build32.sh failed").splitlines()[-1])
    return r.stdout.strip().splitlines()[-1]


def test_the_frozen_build_imports_every_firmware_module_from_the_image_alone(tmp_path):
    # the 32-bit build `make bench` uses (make mp32), with nothing but .frozen on the path
    names = sorted(m for m in manifest_modules() if m.startswith("firmware"))
    script = "import sys\nfor n in %r:\n    __import__(n)\n" % names + \
             "import umqtt.simple\numqtt.simple.MQTTClient('c', 'h', ssl_params={})\nprint('ok', len(%r))\n" % names
    r = subprocess.run([_mp32(), "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, MICROPYPATH=".frozen"))
    # umqtt.simple 1.3.4 (the tested one) takes ssl_params; the >= 1.6 stock images freeze does not
    assert r.returncode == 0 and r.stdout.split() == ["ok", str(len(names))], r.stderr


def test_the_stock_build_freezes_no_firmware_only_what_a_stock_image_freezes_that_it_imports(tmp_path):
    # the build `make bench` runs the .mpy rows on: the firmware's names are not in its image
    script = ("import ssl, umqtt.simple, urequests\nssl.SSLContext\n"
              "for n in ('firmware', 'ota_boot', 'ussl'):\n"
              "    try:\n        __import__(n)\n        print('frozen', n)\n"
              "    except ImportError:\n        pass\nprint('ok')\n")
    r = subprocess.run([_mp32("--stock"), "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, MICROPYPATH=".frozen"))
    assert r.returncode == 0 and r.stdout.split() == ["ok"], r.stdout + r.stderr


def _which_requests(tmp_path, boot):
    # `requests` is frozen in the unix port as umqtt.simple is in an ESP32 image: a copy in a
    # lib folder stands for deploy's /lib/umqtt.
    lib = tmp_path / "lib" / "requests"
    lib.mkdir(parents=True, exist_ok=True)
    (lib / "__init__.py").write_text("WHERE = 'lib'\n")
    pre = "exec(open(%r).read())\n" % os.path.join(REPO, "boot.py") if boot else ""
    script = pre + "import requests\nprint(getattr(requests, 'WHERE', 'frozen'))\n"
    r = subprocess.run([micropython(), "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, MICROPYPATH=".frozen:" + str(tmp_path / "lib")))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_boot_py_puts_the_board_s_files_ahead_of_the_frozen_modules(tmp_path):
    assert _which_requests(tmp_path, boot=False) == "frozen"     # the stock order: .frozen first
    assert _which_requests(tmp_path, boot=True) == "lib"         # after boot.py: what deploy put there
