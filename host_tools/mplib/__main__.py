"""Fetch the pinned micropython-lib packages into .mplib/ (standard library only).

micropython-umqtt.simple and micropython-urequests exist on the package index only as old
"upip" sdists, which pip refuses to install. This script reads host_tools/mplib/lock.json,
asks the index pip is configured with for each pinned file (PEP 691 JSON simple API, with
a PEP 503 HTML fallback), checks its sha256 against the lock, and extracts the listed .py
files. Everything is downloaded and checked before anything is written, and the new
folder replaces the old one by rename, so a failure leaves the previous .mplib/ as it was.

    python -m host_tools.mplib                      install into .mplib/
    python -m host_tools.mplib --lock               recompute the lock from the index
    python -m host_tools.mplib --lock NAME==VER     add or move one package in the lock

The index is taken from PIP_INDEX_URL, then `pip config list` (index-url), then pip's own
default; --index-url overrides all three.
"""
import argparse
import ast
import hashlib
import html.parser
import io
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request

from host_tools.files import write_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_LOCK = os.path.join(HERE, "lock.json")
DEFAULT_DEST = os.path.join(REPO, ".mplib")
SHIM_DIR = os.path.join(HERE, "shims")
MARKER = "INSTALLED.json"  # written last into the new folder; the Makefile's target

_JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_ACCEPT = _JSON_TYPE + ", application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
_DEFAULT_TIMEOUT = 60.0


class MplibError(Exception):
    """A problem the user can fix; printed as one line."""


# ---------------------------------------------------------------- pip's settings

def _pip_config():
    """`pip config list` as {"section.key": value}; {} if pip cannot tell."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    settings = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            settings[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            settings[key.strip()] = value.strip()
    return settings


def _pick(config, option):
    """One option the way pip resolves it: environment, command section, then global."""
    for section in (":env:", "install", "download", "global"):
        value = config.get(section + "." + option)
        if value:
            return value
    return None


def _pip_default_index():
    try:
        from pip._internal.models.index import PyPI
    except ImportError as exc:
        raise MplibError(
            "no package index configured and pip is not importable to tell its default "
            "(%s); set PIP_INDEX_URL or pass --index-url" % exc
        ) from None
    return PyPI.simple_url


def index_settings(index_url=None):
    """(index URL, CA bundle or None, timeout seconds), resolved as pip would."""
    config = _pip_config()
    url = (index_url or os.environ.get("PIP_INDEX_URL") or _pick(config, "index-url")
           or _pip_default_index())
    cert = os.environ.get("PIP_CERT") or _pick(config, "cert")
    timeout = os.environ.get("PIP_DEFAULT_TIMEOUT") or _pick(config, "timeout") \
        or _pick(config, "default-timeout")
    try:
        timeout = float(timeout) if timeout else _DEFAULT_TIMEOUT
    except ValueError:
        timeout = _DEFAULT_TIMEOUT
    return url, cert, timeout


# ---------------------------------------------------------------- the index

def normalize(name):
    """PEP 503 project name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def redact(url):
    """The URL without any password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = "%s:***@%s" % (parts.username, parts.hostname)
    if parts.port:
        netloc += ":%d" % parts.port
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class _Links(html.parser.HTMLParser):
    """The <a href> links of a PEP 503 project page."""

    def __init__(self):
        super().__init__()
        self.links = []  # (filename, href)
        self._href = None
        self._text = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append(("".join(self._text).strip(), self._href))
            self._href = None


class Index:
    """A PEP 691 / PEP 503 simple index, reached the way pip is configured to reach it."""

    def __init__(self, url, cert=None, timeout=_DEFAULT_TIMEOUT):
        parts = urllib.parse.urlsplit(url)
        self.shown = redact(url)
        # pip's `cert` setting, if any, also covers files served from another host.
        context = ssl.create_default_context(cafile=cert) if cert else ssl.create_default_context()
        handlers = [urllib.request.HTTPSHandler(context=context)]
        if parts.username is not None:
            netloc = parts.hostname + (":%d" % parts.port if parts.port else "")
            url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
            passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
            passwords.add_password(None, url, urllib.parse.unquote(parts.username),
                                   urllib.parse.unquote(parts.password or ""))
            handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
        self.url = url if url.endswith("/") else url + "/"
        self.timeout = timeout
        self._opener = urllib.request.build_opener(*handlers)

    def _get(self, url, accept=None):
        request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
        with self._opener.open(request, timeout=self.timeout) as response:
            return response.read(), response.headers.get_content_type(), response.geturl()

    def files(self, project):
        """{filename: (absolute url, sha256 from the index or None)} for one project."""
        page = urllib.parse.urljoin(self.url, normalize(project) + "/")
        try:
            body, ctype, final = self._get(page, _ACCEPT)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise MplibError("%s is not on the package index at %s" % (project, self.shown)) from None
            raise MplibError("the package index at %s answered %s for %s; check your pip config"
                             % (self.shown, exc.code, project)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MplibError("could not reach the package index at %s: %s; check your network "
                             "or pip config" % (self.shown, reason)) from None
        found = {}
        if ctype == _JSON_TYPE:
            try:
                for entry in json.loads(body)["files"]:
                    found[entry["filename"]] = (urllib.parse.urljoin(final, entry["url"]),
                                                entry.get("hashes", {}).get("sha256"))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise MplibError("the package index at %s sent an unreadable page for %s (%s: %s)"
                                 % (self.shown, project, type(exc).__name__, exc)) from None
        else:
            links = _Links()
            links.feed(body.decode("utf-8", "replace"))
            for text, href in links.links:
                url, _, fragment = urllib.parse.urljoin(final, href).partition("#")
                name = text or urllib.parse.unquote(url.rsplit("/", 1)[-1])
                algo, _, digest = fragment.partition("=")
                found[name] = (url, digest if algo == "sha256" else None)
        return found

    def download(self, url):
        try:
            return self._get(url)[0]
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MplibError("could not download %s: %s; check your network or pip config"
                             % (redact(url), reason)) from None


# ---------------------------------------------------------------- lock file

def read_lock(path):
    try:
        with open(path) as f:
            lock = json.load(f)
        packages = lock["packages"]
        for p in packages:
            for key in ("name", "version", "filename", "sha256", "files"):
                if key not in p:
                    raise KeyError(key)
            for target in p["files"].values():
                _check_target(target)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MplibError("cannot read the lock %s: %s: %s" % (path, type(exc).__name__, exc)) from None
    return lock


def _check_target(target):
    parts = target.split("/")
    if target.startswith("/") or ".." in parts or not target.endswith(".py"):
        raise ValueError("unsafe install path %r" % target)


def lock_entry(index, name, version):
    """Compute one lock entry from the index: the version's sdist, its sha256, its .py files."""
    stem = normalize(name) + "-" + version
    listing = index.files(name)
    candidates = [f for f in listing
                  if f.endswith(".tar.gz") and normalize(f[:-len(".tar.gz")]) == normalize(stem)]
    if not candidates:
        raise MplibError("%s %s has no sdist on the package index at %s" % (name, version, index.shown))
    filename = candidates[0]
    url, listed = listing[filename]
    data = index.download(url)
    digest = hashlib.sha256(data).hexdigest()
    if listed and listed != digest:
        raise MplibError("%s: the index lists sha256 %s but the download has %s"
                         % (filename, listed, digest))
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            inner = member.name.partition("/")[2]
            if (member.isfile() and inner.endswith(".py") and inner != "setup.py"
                    and ".egg-info/" not in member.name):
                files[member.name] = inner
    if not files:
        raise MplibError("%s contains no .py files to install" % filename)
    return {"name": name, "version": version, "filename": filename, "sha256": digest,
            "files": dict(sorted(files.items()))}


def relock(lock_path, index, specs):
    try:
        lock = read_lock(lock_path)
    except MplibError:
        if os.path.exists(lock_path):
            raise
        lock = {"packages": []}
    wanted = {normalize(p["name"]): (p["name"], p["version"]) for p in lock["packages"]}
    for spec in specs:
        name, sep, version = spec.partition("==")
        if not sep or not name or not version:
            raise MplibError("expected NAME==VERSION, got %r" % spec)
        wanted[normalize(name)] = (name, version)
    lock["packages"] = [lock_entry(index, n, v) for n, v in sorted(wanted.values())]
    write_atomic(lock_path, (json.dumps(lock, indent=2) + "\n").encode())
    return lock


# ---------------------------------------------------------------- install

def fetch_all(lock, index):
    """{filename: verified bytes}; raises before anything is written."""
    blobs = {}
    for p in lock["packages"]:
        listing = index.files(p["name"])
        if p["filename"] not in listing:
            raise MplibError("%s %s: %s is not on the package index at %s"
                             % (p["name"], p["version"], p["filename"], index.shown))
        data = index.download(listing[p["filename"]][0])
        digest = hashlib.sha256(data).hexdigest()
        if digest != p["sha256"]:
            raise MplibError("sha256 mismatch for %s: the lock says %s, the download is %s; "
                             "nothing was written" % (p["filename"], p["sha256"], digest))
        blobs[p["filename"]] = data
    return blobs


def install(lock, blobs, dest, shim_dir=SHIM_DIR):
    """Build the folder beside dest, then swap it in by rename."""
    dest = os.path.abspath(dest)
    parent = os.path.dirname(dest)
    new = "%s.new-%d" % (dest, os.getpid())
    old = "%s.old-%d" % (dest, os.getpid())
    shutil.rmtree(new, ignore_errors=True)
    os.makedirs(new)
    try:
        for p in lock["packages"]:
            with tarfile.open(fileobj=io.BytesIO(blobs[p["filename"]]), mode="r:gz") as tar:
                for member, target in p["files"].items():
                    try:
                        info = tar.getmember(member)
                    except KeyError:
                        raise MplibError("%s has no %s; fix the lock (--lock)"
                                         % (p["filename"], member)) from None
                    if not info.isfile():
                        raise MplibError("%s: %s is not a regular file" % (p["filename"], member))
                    path = os.path.join(new, *target.split("/"))
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(tar.extractfile(info).read())
        for shim in sorted(os.listdir(shim_dir)):
            if shim.endswith(".py"):
                shutil.copyfile(os.path.join(shim_dir, shim), os.path.join(new, shim))
        marker = [{k: p[k] for k in ("name", "version", "sha256")} for p in lock["packages"]]
        with open(os.path.join(new, MARKER), "w") as f:
            json.dump(marker, f, indent=2)
            f.write("\n")
        os.makedirs(parent, exist_ok=True)
        if os.path.exists(dest):
            os.rename(dest, old)
        os.rename(new, dest)
    finally:
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m host_tools.mplib",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", nargs="*", metavar="NAME==VERSION",
                        help="recompute the lock from the index (optionally add/move packages)")
    parser.add_argument("--lockfile", default=DEFAULT_LOCK)
    parser.add_argument("--dest", default=DEFAULT_DEST, help="install folder (default .mplib/)")
    parser.add_argument("--index-url", help="override the index pip is configured with")
    args = parser.parse_args(argv)
    try:
        index = Index(*index_settings(args.index_url))
        if args.lock is not None:
            lock = relock(args.lockfile, index, args.lock)
            print("mplib: locked %s" % ", ".join("%s==%s" % (p["name"], p["version"])
                                                 for p in lock["packages"]))
            return 0
        lock = read_lock(args.lockfile)
        install(lock, fetch_all(lock, index), args.dest)
    except MplibError as exc:
        print("mplib: error: %s" % exc, file=sys.stderr)
        return 1
    print("mplib: installed %s into %s" % (
        ", ".join("%s==%s" % (p["name"], p["version"]) for p in lock["packages"]),
        ".mplib/" if args.dest == DEFAULT_DEST else args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
