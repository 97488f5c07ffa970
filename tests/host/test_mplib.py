"""host_tools/mplib/__main__.py against a real local index served over HTTP on 127.0.0.1.

The index serves PEP 691 JSON when asked for it and PEP 503 HTML otherwise, so both code
paths run; the fetcher runs as a subprocess, as `make setup` runs it.
"""
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROJECT = "micropython-demo.pkg"  # a dot in the name, like umqtt.simple
FILENAME = "micropython-demo.pkg-1.0.tar.gz"
MODULE = b"def hello():\n    return 'hi'\n"


def _sdist():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("micropython-demo.pkg-1.0/demo/pkg.py", MODULE),
                           ("micropython-demo.pkg-1.0/setup.py", b"raise SystemExit\n"),
                           ("micropython-demo.pkg-1.0/micropython_demo.pkg.egg-info/PKG-INFO", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SDIST = _sdist()
SHA = hashlib.sha256(SDIST).hexdigest()


class _Index(BaseHTTPRequestHandler):
    speaks_json = True
    requests = []

    def do_GET(self):
        type(self).requests.append((self.path, self.headers.get("Accept", "")))
        if self.path == "/simple/micropython-demo-pkg/":
            if self.speaks_json and "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
                body = json.dumps({"meta": {"api-version": "1.0"}, "name": "micropython-demo-pkg",
                                   "files": [{"filename": FILENAME, "url": "../../files/" + FILENAME,
                                              "hashes": {"sha256": SHA}}]}).encode()
                ctype = "application/vnd.pypi.simple.v1+json"
            else:
                body = ('<html><body><a href="/files/%s#sha256=%s">%s</a></body></html>'
                        % (FILENAME, SHA, FILENAME)).encode()
                ctype = "text/html"
        elif self.path == "/files/" + FILENAME:
            body, ctype = SDIST, "application/octet-stream"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _HtmlOnly(_Index):
    """A PEP 503 index that ignores the Accept header, as plain static hosting does."""
    speaks_json = False


@pytest.fixture(params=[_Index, _HtmlOnly], ids=["json", "html"])
def index(request):
    handler = request.param
    handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/simple" % server.server_address[1]  # no trailing slash on purpose
    server.shutdown()
    server.server_close()
    thread.join()


def _lock(tmp_path, sha=SHA):
    path = tmp_path / "lock.json"
    path.write_text(json.dumps({"packages": [{
        "name": PROJECT, "version": "1.0", "filename": FILENAME, "sha256": sha,
        "files": {"micropython-demo.pkg-1.0/demo/pkg.py": "demo/pkg.py"}}]}))
    return path


def _run(tmp_path, index_url, *args, env_extra=None):
    env = dict(os.environ, PIP_INDEX_URL=index_url, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "host_tools.mplib", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_good_hash_installs_the_files_and_the_ussl_shim(tmp_path, index):
    dest = tmp_path / "mplib"
    result = _run(tmp_path, index, "--lockfile", str(_lock(tmp_path)), "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    assert (dest / "demo" / "pkg.py").read_bytes() == MODULE
    assert "from ssl import *" in (dest / "ussl.py").read_text()
    assert json.loads((dest / "INSTALLED.json").read_text())[0]["sha256"] == SHA
    assert sorted(p.name for p in dest.iterdir()) == ["INSTALLED.json", "demo", "ussl.py"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock.json", "mplib"]  # no temp dirs left


def test_reinstall_replaces_the_old_folder(tmp_path, index):
    dest = tmp_path / "mplib"
    (dest / "stale").mkdir(parents=True)
    result = _run(tmp_path, index, "--lockfile", str(_lock(tmp_path)), "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    assert not (dest / "stale").exists()
    assert (dest / "demo" / "pkg.py").exists()


def test_bad_hash_is_a_clear_error_and_writes_nothing(tmp_path, index):
    dest = tmp_path / "mplib"
    (dest / "demo").mkdir(parents=True)
    (dest / "demo" / "pkg.py").write_bytes(b"old = 1\n")
    result = _run(tmp_path, index, "--lockfile", str(_lock(tmp_path, sha="0" * 64)), "--dest", str(dest))
    assert result.returncode == 1
    assert "sha256 mismatch for " + FILENAME in result.stderr
    assert SHA in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (dest / "demo" / "pkg.py").read_bytes() == b"old = 1\n"
    assert sorted(p.name for p in dest.iterdir()) == ["demo"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock.json", "mplib"]


def test_unreachable_index_is_one_clear_line(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = "http://127.0.0.1:%d/simple/" % port
    dest = tmp_path / "mplib"
    result = _run(tmp_path, url, "--lockfile", str(_lock(tmp_path)), "--dest", str(dest))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("mplib: error: could not reach the package index at " + url + ": ")
    assert lines[0].endswith("; check your network or pip config")
    assert not dest.exists()


def test_password_in_the_index_url_never_shows(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _run(tmp_path, "http://me:s3cret@127.0.0.1:%d/simple" % port,
                  "--lockfile", str(_lock(tmp_path)), "--dest", str(tmp_path / "mplib"))
    assert result.returncode == 1
    assert "s3cret" not in result.stderr and "me:***@127.0.0.1" in result.stderr


def test_index_comes_from_pip_config_when_the_environment_has_none(tmp_path, index):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = %s/\n" % index)
    env = {k: v for k, v in os.environ.items() if k != "PIP_INDEX_URL"}
    env.update(PIP_CONFIG_FILE=str(config), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    dest = tmp_path / "mplib"
    result = subprocess.run([sys.executable, "-m", "host_tools.mplib", "--lockfile",
                             str(_lock(tmp_path)), "--dest", str(dest)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (dest / "demo" / "pkg.py").read_bytes() == MODULE
    assert any(path == "/simple/micropython-demo-pkg/" for path, _ in _Index.requests + _HtmlOnly.requests)


def test_lock_computes_the_entry_from_the_index(tmp_path, index):
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"_about": "kept", "packages": []}))
    result = _run(tmp_path, index, "--lockfile", str(lock), "--lock", PROJECT + "==1.0")
    assert result.returncode == 0, result.stderr
    written = json.loads(lock.read_text())
    assert written["_about"] == "kept"
    assert written["packages"] == [{
        "name": PROJECT, "version": "1.0", "filename": FILENAME, "sha256": SHA,
        "files": {"micropython-demo.pkg-1.0/demo/pkg.py": "demo/pkg.py"}}]


def test_the_committed_lock_pins_the_packages_the_design_names():
    with open(os.path.join(REPO, "host_tools", "mplib", "lock.json")) as f:
        packages = {p["name"]: p for p in json.load(f)["packages"]}
    assert packages["micropython-umqtt.simple"]["version"] == "1.3.4"
    assert packages["micropython-umqtt.simple"]["sha256"] == \
        "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
    assert packages["micropython-urequests"]["version"] == "0.9.1"
    assert packages["micropython-urequests"]["sha256"] == \
        "15ed0132bcff1a84e87049d9d7780ce26df0810fa674aa89d187e17493d6e3c5"


def test_the_installed_packages_import_on_micropython():
    """What make setup put in .mplib/ works: umqtt.simple and urequests find `ussl` via the shim."""
    mplib = os.path.join(REPO, ".mplib")
    micropython = os.environ.get("MICROPYTHON") or os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.path.exists(os.path.join(mplib, "INSTALLED.json")) or not os.path.exists(micropython):
        pytest.skip("run make setup first (needs .mplib/ and a micropython)")
    code = ("import ussl, ssl; from umqtt.simple import MQTTClient; import urequests; "
            "print(ussl.SSLContext is ssl.SSLContext, MQTTClient.__name__, urequests.get.__name__)")
    result = subprocess.run([micropython, "-c", code], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (mplib, REPO)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["True", "MQTTClient", "get"]
