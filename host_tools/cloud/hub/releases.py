"""Over-the-air release files, served by the local hub over its HTTPS port.

    GET /releases/{kind}/{version}/{name}      kind: firmware | trustStore

A stand-in for the storage a user uploads a release to on Azure (typically a blob container,
read with a SAS URL): IoT Hub itself serves no files. Read-only and without authorization,
like a public-read container; the device trusts what it downloads only because every file's
SHA-256 is in the manifest whose own SHA-256 came in its twin. `python -m host_tools ota
publish` writes DIR/releases/{kind}/{version}/ (manifest.json, bundle.bin).
"""
import os
import re

from host_tools.cloud.hub.http_server import HttpError, Response

KINDS = ("firmware", "trustStore")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def folder(data_dir, kind=None, version=None):
    parts = [data_dir, "releases"] + [p for p in (kind, version) if p]
    return os.path.join(*parts)


def is_release_request(req):
    return req.method in ("GET", "HEAD") and req.segments[:1] == ["releases"]


def serve(data_dir, req):
    seg = req.segments[1:]
    if len(seg) != 3 or seg[0] not in KINDS or not all(_NAME.match(s) for s in seg[1:]):
        raise HttpError(404, "no such release file: %s" % req.path)
    path = os.path.join(folder(data_dir, seg[0], seg[1]), seg[2])
    try:
        with open(path, "rb") as f:
            body = f.read()
    except OSError:
        raise HttpError(404, "no such release file: %s" % req.path) from None
    ctype = "application/json" if seg[2].endswith(".json") else "application/octet-stream"
    return Response(200, b"" if req.method == "HEAD" else body, ctype)
