"""ota publish for Azure (--out, --url-base): the files to upload and the twin value to set."""
import hashlib
import json
import os
import subprocess
import sys

from host_tools.fleet import ota

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fake_build(root):
    for rel, data in (("firmware/__init__.mpy", b"M\x06a"), ("firmware/app/orders.mpy", b"M\x06bb")):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def test_publish_for_azure_prints_what_to_upload_and_the_twin_value(tmp_path):
    _fake_build(str(tmp_path / "mpy"))
    base = "https://acct.blob.core.windows.net/releases?sv=2024-01-01&sig=abc"
    r = subprocess.run([sys.executable, "-m", "host_tools", "ota", "publish", "--version", "1.2",
                        "--from", str(tmp_path / "mpy"), "--out", str(tmp_path / "out"), "--url-base", base],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "out" / "firmware" / "1.2"
    manifest = (folder / "manifest.json").read_bytes()
    m = json.loads(manifest)
    assert [f["path"] for f in m["files"]] == ["firmware/__init__.mpy", "firmware/app/orders.mpy"]
    assert (folder / "bundle.bin").read_bytes() == b"M\x06aM\x06bb"
    assert m["files"][1] == {"path": "firmware/app/orders.mpy", "size": 4,
                             "sha256": hashlib.sha256(b"M\x06bb").hexdigest()}
    value = json.loads(r.stdout.split("desired twin value: ")[1])["firmware"]
    assert value == {"version": "1.2", "size": len(manifest), "sha256": hashlib.sha256(manifest).hexdigest(),
                     "url": "https://acct.blob.core.windows.net/releases/firmware/1.2/manifest.json?sv=2024-01-01&sig=abc"}
    assert "upload" in r.stdout


def test_percentage_is_stable_and_grows():
    ids = ["d%d" % i for i in range(200)]
    ten = {d for d in ids if ota.in_percent(d, "1.1", 10)}
    fifty = {d for d in ids if ota.in_percent(d, "1.1", 50)}
    assert ten < fifty and 5 <= len(ten) <= 40 and 70 <= len(fifty) <= 130
    assert all(ota.in_percent(d, "1.1", 100) for d in ids)
