"""Over-the-air updates for a fleet: build a release, roll it out through the device twin, watch it.

    python -m host_tools ota publish --version 1.1 [--from build/mpy] [--min-free N]
    python -m host_tools ota publish --version 2 --ca-bundle roots.pem      # a trust-store release
    python -m host_tools ota rollout --version 1.1 --devices button-1 button-2 | --all [--percent 10]
    python -m host_tools ota status      # each device's firmware, trust store (ca.json version), update state

A release is manifest.json (version, kind, files with size and SHA-256, minFree, base) and
bundle.bin (the files back to back, in the manifest's order), in DATA/releases/KIND/VERSION/,
which the local hub serves over HTTPS (host_tools/cloud/hub/releases.py). For Azure, publish
with --out DIR --url-base URL: upload DIR's two files there (a blob container; a SAS query
string on URL is kept) and set the twin value the command prints. Rollout sets the desired
property `firmware` (or `trustStore`) = {version, url, sha256, size} of the manifest with
PATCH /twins/{id}, the REST call the official azure-iot-hub SDK's update_twin makes.
Device side: firmware/runtime/ota.py; the rules a manifest must meet: firmware/app/ota.py.
"""
import hashlib
import json
import os

from host_tools.errors import CliError

DEFAULT_BUILD = os.path.join("build", "mpy")


# ---- building a release -------------------------------------------------------------------------
def firmware_files(build):
    """(path inside the release, absolute file) for every module `make mpy` wrote under firmware/."""
    root = os.path.join(build, "firmware")
    if not os.path.isdir(root):
        raise CliError("%s has no firmware/ folder: run make mpy first (or pass --from DIR)" % build)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".mpy"):
                full = os.path.join(dirpath, name)
                out.append((os.path.relpath(full, build).replace(os.sep, "/"), full))
    if not out:
        raise CliError("%s holds no .mpy files: run make mpy first" % root)
    return out


def ca_bundle(path, version):
    """The trust-store release's files: ca.der (the roots in `path`, PEM or DER, one or more,
    as DER back to back) and ca.json ({"version": N, "certs": [...]}), the bundle format
    provisioning writes (host_tools/fleet/trust.py); N is the release's version, a whole number."""
    from host_tools.fleet import trust
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CliError("cannot read CA bundle %s: %s" % (path, exc.strerror)) from None
    if not version.isdigit():
        raise CliError("a trust-store release's --version is a whole number (ca.json's version), got %r" % version)
    certs = trust.der_certificates(data, path)
    from cryptography import x509
    entries = [{"subject": x509.load_der_x509_certificate(c).subject.rfc4514_string(), "sha256": trust.sha256(c)}
               for c in certs]
    return [("ca.der", b"".join(certs)),
            ("ca.json", (json.dumps({"version": int(version), "certs": entries}, indent=1) + "\n").encode())]


def build(kind, version, files, min_free=0, base=None):
    """(manifest bytes, bundle bytes) for files = [(path, bytes)]."""
    from firmware.app import ota
    if ota.parse_version(version) is None:
        raise CliError("--version must be numbers with dots, e.g. 1.1 (got %r)" % version)
    entries, bundle = [], bytearray()
    for path, data in files:
        entries.append({"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        bundle += data
    manifest = {"version": version, "kind": kind, "base": base, "bundle": "bundle.bin",
                "minFree": max(min_free, 2 * len(bundle)), "files": entries}
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    if len(raw) > ota.MAX_MANIFEST:
        raise CliError("the manifest is %d bytes; the device reads at most %d" % (len(raw), ota.MAX_MANIFEST))
    return raw, bytes(bundle)


def twin_value(version, url, manifest):
    return {"version": version, "url": url, "sha256": hashlib.sha256(manifest).hexdigest(), "size": len(manifest)}


def _write(folder, manifest, bundle):
    from host_tools.files import write_atomic
    os.makedirs(folder, exist_ok=True)
    write_atomic(os.path.join(folder, "bundle.bin"), bundle)
    write_atomic(os.path.join(folder, "manifest.json"), manifest)   # last: the release is whole


def hub_base_url(data):
    from host_tools.files import read_json
    try:
        info = read_json(os.path.join(data, "hub.json"))
    except (OSError, ValueError):
        raise CliError("no hub is running for %s (start: python -m host_tools hub --data %s)" % (data, data)) from None
    return "https://%s:%d/releases" % (info["host"], info["api_port"])


def release_url(base, kind, version):
    q = base.find("?")
    path, query = (base[:q], base[q:]) if q >= 0 else (base, "")
    return "%s/%s/%s/manifest.json%s" % (path.rstrip("/"), kind, version, query)


def cmd_publish(args):
    from host_tools.cloud.hub import releases
    made = []
    if args.ca_bundle:
        made.append(("trustStore", ca_bundle(args.ca_bundle, args.version)))
    if not args.ca_bundle or args.firmware:
        files = []
        for path, full in firmware_files(args.source):
            with open(full, "rb") as f:
                files.append((path, f.read()))
        made.append(("firmware", files))
    for kind, files in made:
        manifest, bundle = build(kind, args.version, files, args.min_free, args.base)
        if args.out:
            folder = os.path.join(args.out, kind, args.version)
            base = args.url_base
        else:
            folder = releases.folder(args.data, kind, args.version)
            base = args.url_base or _try_base(args.data)
        _write(folder, manifest, bundle)
        print("%s %s: %d files, %d bytes in %s" % (kind, args.version, len(files), len(bundle), folder))
        if args.out:
            print("  upload %s and %s to %s/%s/%s/" % (os.path.join(folder, "manifest.json"),
                                                    os.path.join(folder, "bundle.bin"),
                                                    (base or "URL").split("?")[0].rstrip("/"), kind, args.version))
        if base:
            value = twin_value(args.version, release_url(base, kind, args.version), manifest)
            print("  desired twin value: %s" % json.dumps({kind: value}))
        elif args.out:
            print("  pass --url-base URL (where these files will be served) to print the twin value")
        else:
            print("  the hub is not running: ota rollout will compute the URL")
    return 0


def _try_base(data):
    try:
        return hub_base_url(data)
    except CliError:
        return None


# ---- rolling out ----------------------------------------------------------------------------------
def in_percent(device_id, version, percent):
    """Deterministic: the same devices for the same version, and more of them as percent grows."""
    h = int.from_bytes(hashlib.sha256(("%s/%s" % (version, device_id)).encode()).digest()[:4], "big")
    return h % 100 < percent


def cmd_rollout(args):
    from host_tools.cloud.hub import releases
    from host_tools.cloud.hub.cli import _call, _client
    if not 0 < args.percent <= 100:
        raise CliError("--percent must be between 1 and 100")
    folder = releases.folder(args.data, args.kind, args.version)
    try:
        with open(os.path.join(folder, "manifest.json"), "rb") as f:
            manifest = f.read()
    except OSError:
        raise CliError("no %s release %s in %s: run ota publish --version %s first"
                       % (args.kind, args.version, folder, args.version)) from None
    url = release_url(args.url_base or hub_base_url(args.data), args.kind, args.version)
    value = twin_value(args.version, url, manifest)
    client = _client(args)
    ids = args.devices or [d["deviceId"] for d in _call(client.list_devices)]
    chosen = [d for d in ids if args.percent == 100 or in_percent(d, args.version, args.percent)]
    for device_id in chosen:
        _call(client.update_desired, device_id, {args.kind: value})
        print("%s: desired %s %s" % (device_id, args.kind, args.version))
    print("%d of %d devices" % (len(chosen), len(ids)))
    return 0


def cmd_status(args):
    from host_tools.cloud.hub.cli import _call, _client
    client = _client(args)
    rows = []
    for dev in _call(client.list_devices):
        twin = _call(client.get_twin, dev["deviceId"])
        props = twin.get("properties", {})
        rep, des = props.get("reported", {}), props.get("desired", {})
        row = {"deviceId": dev["deviceId"], "firmwareVersion": rep.get("firmwareVersion"),
               "desired": (des.get("firmware") or {}).get("version"),
               "trustStoreVersion": rep.get("trustStoreVersion")}
        for kind in ("firmware", "trustStore"):
            row[kind + "Update"] = rep.get(kind + "Update")
        rows.append(row)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print("%-20s %-10s %-10s %-6s %s" % ("device", "running", "desired", "trust", "update"))
    for row in rows:
        st = row["firmwareUpdate"] or {}
        text = " ".join(str(x) for x in (st.get("phase"), st.get("version"),
                                         "%s%%" % st["progress"] if st.get("progress") is not None else None,
                                         st.get("reason")) if x is not None)
        ts = row["trustStoreUpdate"] or {}
        if ts.get("phase") not in (None, "idle"):
            text += "  trust store: %s %s %s" % (ts.get("phase"), ts.get("version"), ts.get("reason") or "")
        print("%-20s %-10s %-10s %-6s %s" % (row["deviceId"], row["firmwareVersion"] or "-", row["desired"] or "-",
                                             row["trustStoreVersion"] or "-", text or "-"))
    return 0


def add_commands(sub):
    from host_tools.cloud.hub.cli import hub_command
    p = sub.add_parser("ota", help="over-the-air updates: publish a release, roll it out, watch it")
    osub = p.add_subparsers(dest="ota_command", metavar="SUBCOMMAND", required=True)

    pub = hub_command(osub, "publish", cmd_publish,
                      "build a release from make mpy output and/or a CA bundle")
    pub.add_argument("--version", required=True, help="the release's version, e.g. 1.1")
    pub.add_argument("--from", dest="source", default=DEFAULT_BUILD, help="make mpy output (default %(default)s)")
    pub.add_argument("--ca-bundle", help="a trust-store release: the roots in this file (PEM or DER, one or more)")
    pub.add_argument("--firmware", action="store_true", help="with --ca-bundle: a firmware release too")
    pub.add_argument("--min-free", type=int, default=0, help="free flash the device must have, bytes")
    pub.add_argument("--base", help="the version this release applies to (devices running another refuse it)")
    pub.add_argument("--out", help="write the release here (for upload elsewhere) instead of the hub")
    pub.add_argument("--url-base", help="where the releases are served from, e.g. a blob container SAS URL")

    ro = hub_command(osub, "rollout", cmd_rollout,
                     "set the desired firmware (or trustStore) on devices")
    ro.add_argument("--version", required=True)
    ro.add_argument("--kind", choices=("firmware", "trustStore"), default="firmware")
    who = ro.add_mutually_exclusive_group(required=True)
    who.add_argument("--devices", nargs="+", metavar="ID")
    who.add_argument("--all", action="store_true")
    ro.add_argument("--percent", type=int, default=100, help="only this share of the chosen devices")
    ro.add_argument("--url-base", help="where the release is served (default: this hub)")

    st = hub_command(osub, "status", cmd_status, "each device's running firmware, trust-store version and update state")
    st.add_argument("--json", action="store_true", help="one JSON object per device")
