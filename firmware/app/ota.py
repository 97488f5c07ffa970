# Over-the-air updates, the decisions (pure: no I/O, runs on both interpreters).
#
# A release is a manifest (JSON) and one bundle: the release's files back to back, in the
# manifest's order. The twin's desired `firmware` (or `trustStore`) names the manifest:
#   {"version": "1.1", "url": "https://host/releases/1.1/manifest.json",
#    "sha256": hex of the manifest, "size": bytes of the manifest}
# manifest: {"version": V, "kind": "firmware"|"trustStore", "base": None or the version a
#   delta applies to, "minFree": bytes, "bundle": "bundle.bin",
#   "files": [{"path": "firmware/app/orders.mpy", "size": N, "sha256": hex}, ...]}
# What is decided here: is a desired value usable, is it newer, does a manifest fit this
# device, where is a file of the release, the reported state, and the retry delay.
from firmware.iothub import retry

KINDS = ("firmware", "trustStore")
# phases, in the order an update goes through them (rolledBack / failed end one)
IDLE = "idle"
DOWNLOADING = "downloading"
VERIFYING = "verifying"
INSTALLING = "installing"
TRIAL = "trial"
CONFIRMED = "confirmed"
ROLLED_BACK = "rolledBack"
FAILED = "failed"

MAX_MANIFEST = 8192          # bytes: the manifest is read whole, so it is bounded
_MAX_FILES = 96
_MAX_VERSION = 16
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"
_HEX = "0123456789abcdef"
# reasons that a retry of the same desired value cannot fix: wait for a new desired value
PERMANENT = ("not https", "bad desired", "other version", "bad manifest", "not newer",
             "other base", "rolled back", "would not verify the hub", "not a CA")


def parse_version(v):
    # "1.10.2" -> (1, 10, 2); None for anything else (at most 4 numbers)
    if type(v) is not str or not 0 < len(v) <= _MAX_VERSION:
        return None
    out = []
    for part in v.split("."):
        if not part or len(part) > 5:
            return None
        for c in part:
            if c not in "0123456789":
                return None
        out.append(int(part))
    return tuple(out) if len(out) <= 4 else None


def newer(a, b):
    # True when version a is later than version b (1.1 > 1.0.0 > 1.0); False if either is bad.
    pa, pb = parse_version(a), parse_version(b)
    if pa is None or pb is None:
        return False
    n = max(len(pa), len(pb))
    return pa + (0,) * (n - len(pa)) > pb + (0,) * (n - len(pb))


def _is_hex(s, n):
    if type(s) is not str or len(s) != n:
        return False
    for c in s:
        if c not in _HEX:
            return False
    return True


def desired(value):
    # The desired `firmware`/`trustStore` value -> (spec, None) or (None, reason); (None, None)
    # when it is absent or null (nothing asked for).
    if value is None:
        return None, None
    if type(value) is not dict:
        return None, "bad desired"
    url = value.get("url")
    if type(url) is not str or len(url) > 1024:
        return None, "bad desired"
    if url[:8] != "https://":
        return None, "not https"
    if parse_version(value.get("version")) is None or not _is_hex(value.get("sha256"), 64):
        return None, "bad desired"
    size = value.get("size")
    if type(size) is not int or not 0 < size <= MAX_MANIFEST:
        return None, "bad desired"
    return {"version": value["version"], "url": url, "sha256": value["sha256"], "size": size}, None


def _path_ok(p, kind):
    if type(p) is not str or not 0 < len(p) <= 96 or p[0] == "/" or ".." in p or "//" in p:
        return False
    for c in p:
        if c not in _PATH_CHARS:
            return False
    if kind == "firmware":
        return p[:9] == "firmware/"
    return p in ("ca.der", "ca.json")


def check_manifest(m, spec, kind, running):
    # The manifest (a parsed dict) for desired `spec` on a device running `running` ->
    # (files, total bytes, minFree) or a reason string. Files: [(path, size, sha256), ...].
    if type(m) is not dict or type(m.get("files")) is not list:
        return "bad manifest"
    if m.get("version") != spec["version"]:
        return "other version"
    if m.get("kind", "firmware") != kind:
        return "bad manifest"
    base = m.get("base")
    if base is not None and base != running:
        return "other base"
    files = []
    total = 0
    seen = []
    for f in m["files"][:_MAX_FILES + 1]:
        if type(f) is not dict:
            return "bad manifest"
        p, n, h = f.get("path"), f.get("size"), f.get("sha256")
        if not _path_ok(p, kind) or type(n) is not int or n < 0 or not _is_hex(h, 64) or p in seen:
            return "bad manifest"
        seen.append(p)
        files.append((p, n, h))
        total += n
    if not files or len(files) > _MAX_FILES:
        return "bad manifest"
    need = m.get("minFree", 0)
    if type(need) is not int or need < 0:
        return "bad manifest"
    bundle = m.get("bundle", "bundle.bin")
    if not _path_ok(bundle, "firmware") and bundle != "bundle.bin":
        return "bad manifest"
    return files, total, max(need, total)


def sibling_url(url, name):
    # The URL of `name` next to the manifest at `url`, keeping the query string (a container
    # SAS token on Azure blob storage signs every blob of the container).
    q = url.find("?")
    query = url[q:] if q >= 0 else ""
    path = url[:q] if q >= 0 else url
    return path[:path.rfind("/") + 1] + name + query


def state(phase, version=None, reason=None, progress=None):
    # The reported value of one update (reported `firmwareUpdate` or `trustStoreUpdate`).
    return {"phase": phase, "version": version, "progress": progress, "reason": reason}


def retry_in(attempt, rand, base=30):
    # Seconds before retry number `attempt` (0 = the first) after a failure: exponential
    # backoff with jitter from `base` seconds, at most an hour.
    return retry.delay(attempt, rand, base, 3600)
