"""What goes into a 32-bit bench binary (build32.sh), as one digest, and whether the binary on
disk was built from it: the rebuild decision is by content, never by file times.

MicroPython's own build decides by modification times (make for the C objects, makemanifest.py
for the frozen modules: a frozen .mpy is recompiled only when its source is newer, and
frozen_content.c is left alone when no input is newer than it, so a removed module stays
frozen). A build folder filled from another checkout, or a `git checkout` that gives a file an
older time than the last build, then leaves a binary whose frozen firmware is not the tree's.

Two digests, each a sha256 over a canonical JSON text:
- objects: what the C objects depend on: the MicroPython and mbedTLS source versions, the make
  flags (variant, 32-bit, TLS) and the compiler. Another value: build32.sh starts the object
  folder over.
- frozen: every file the board manifest freezes (MicroPython's own manifestfile.py evaluates
  it, as the build does), by its path on the device, how it is frozen and the sha256 of its
  content, and every manifest file read (path and content). Another value: the frozen modules
  are compiled again and the binary relinked (seconds).
`digest` is the sha256 of both. build32.sh writes the record next to the binary (BIN.json) and
into the object folder (inputs.json) once a build succeeds; `make bench` prints and stores it.

Run by build32.sh with the machine's python3 (stdlib only, no host_tools import):
    python3 build_inputs.py want --mp-dir MP --manifest M --repo R [--setting K=V ...]
    python3 build_inputs.py decide WANT OBJECTS_RECORD BINARY_RECORD BINARY
`want` prints the record for the tree as it is; `decide` prints one line: "current",
"refreeze: WHY" or "rebuild: WHY".
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path):
    with open(path, "rb") as f:
        return _sha256(f.read())


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _shown(path, roots):
    """A path as the record shows it: relative to the first of roots (name, folder) holding it,
    so the same content in another checkout gives the same digest."""
    path = os.path.abspath(path)
    for name, root in roots:
        root = os.path.abspath(root)
        if path == root or path.startswith(root + os.sep):
            rel = os.path.relpath(path, root)
            return rel if not name else name + "/" + rel
    return path


def frozen_entries(outputs, manifests, roots=()):
    """The frozen part of the record: outputs are manifestfile's ManifestOutput rows (or any
    object with full_path, target_path, kind and opt), manifests the manifest files read."""
    files = []
    for o in outputs:
        version = getattr(getattr(o, "metadata", None), "version", None)
        files.append({"target": o.target_path, "kind": o.kind, "opt": o.opt, "version": version,
                      "sha256": _file_sha256(o.full_path)})
    files.sort(key=lambda f: f["target"])
    return {"files": files,
            "manifests": sorted(({"path": _shown(m, roots), "sha256": _file_sha256(m)} for m in manifests),
                                key=lambda m: m["path"])}


def record(settings, frozen, tree=None):
    """The whole record: the two digests, their combination, and what they were made from."""
    objects = _sha256(_canonical(settings))
    frozen_digest = _sha256(_canonical(frozen))
    return {"digest": _sha256((objects + frozen_digest).encode()), "objects": objects,
            "frozen": frozen_digest, "tree": tree, "settings": settings,
            "frozen_files": len(frozen["files"]), "manifests": [m["path"] for m in frozen["manifests"]],
            "frozen_inputs": frozen}


def decide(want, objects_record, binary_record, binary_exists):
    """('current' | 'refreeze' | 'rebuild', why): what build32.sh must do for the binary to be
    built from `want`. The records are what the last successful build wrote (None: none)."""
    if not objects_record or objects_record.get("objects") != want["objects"]:
        return "rebuild", ("the object folder has no record of its inputs" if not objects_record
                           else "the sources, flags or compiler changed")
    if not binary_exists or not binary_record:
        return "refreeze", "no binary with a record of its inputs"
    if binary_record.get("digest") != want["digest"]:
        return "refreeze", "the frozen files or manifests changed"
    return "current", "built from these inputs"


def tree_describe(repo):
    """`git describe --always --dirty` of the checkout, or None outside one."""
    env = {k: v for k, v in os.environ.items() if k != "GIT_CEILING_DIRECTORIES"}
    try:
        r = subprocess.run(["git", "-C", repo, "describe", "--always", "--dirty"], env=env,
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return r.stdout.strip() or None


def evaluate_manifest(manifest, mp_dir, variant="standard"):
    """(ManifestOutput rows, manifest files read): the manifest evaluated by the MicroPython
    source's own tools/manifestfile.py, with the path variables ports/unix's build passes."""
    sys.path.insert(0, os.path.join(mp_dir, "tools"))
    try:
        import manifestfile
    finally:
        sys.path.pop(0)
    port = os.path.join(mp_dir, "ports", "unix")
    m = manifestfile.ManifestFile(manifestfile.MODE_FREEZE, {
        "MPY_DIR": mp_dir, "MPY_LIB_DIR": os.path.join(mp_dir, "lib", "micropython-lib"),
        "PORT_DIR": port, "BOARD_DIR": os.path.join(port, "variants", variant)})
    m.execute(os.path.abspath(manifest))
    visited = getattr(m, "_visited", None)   # the manifests include() read (manifestfile 1.26)
    if visited is None:
        raise RuntimeError("this manifestfile.py does not say which manifests it read")
    return m.files(), sorted(visited)


def want(mp_dir, manifest, repo, settings):
    outputs, manifests = evaluate_manifest(manifest, mp_dir, settings.get("VARIANT", "standard"))
    roots = (("$(MPY_DIR)", mp_dir), ("", repo))   # the source lies under build/ of the repo
    r = record(settings, frozen_entries(outputs, manifests, roots), tree_describe(repo))
    r["source"] = _shown(mp_dir, (("", repo),))   # where it was built from (not an input)
    return r


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(prog="build_inputs.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("want")
    w.add_argument("--mp-dir", required=True)
    w.add_argument("--manifest", required=True)
    w.add_argument("--repo", required=True)
    w.add_argument("--setting", action="append", default=[], help="K=V, one per input")
    d = sub.add_parser("decide")
    d.add_argument("want")
    d.add_argument("objects_record")
    d.add_argument("binary_record")
    d.add_argument("binary")
    args = ap.parse_args(argv)
    if args.cmd == "want":
        settings = dict(s.split("=", 1) for s in args.setting)
        try:
            print(json.dumps(want(args.mp_dir, args.manifest, args.repo, settings), indent=1))
        except Exception as e:   # a broken manifest, an unreadable file: one line
            sys.exit(f"cannot read what {os.path.basename(args.manifest)} freezes: {e}")
        return
    wanted = _load(args.want)
    if not wanted:
        sys.exit(f"no record at {args.want}")
    action, why = decide(wanted, _load(args.objects_record), _load(args.binary_record),
                         os.path.isfile(args.binary))
    print(action if action == "current" else f"{action}: {why}")


if __name__ == "__main__":
    main()
