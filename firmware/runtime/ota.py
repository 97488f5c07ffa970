# Over-the-air updates, the I/O: download a release with urequests over HTTPS (the server
# verified with the device's trust store, SNI), stream it to a staging folder in small chunks,
# verify every SHA-256 on flash, switch with one atomic write, confirm or roll back.
# The decisions (is a desired value usable, newer, does the manifest fit) are firmware/app/ota.py.
#
# Files in the device folder (DIR):
#   fw/boot.json     which version runs, its trial and rollback (read at boot by ota_boot.py)
#   fw/<version>/    an installed version: firmware/... and manifest.json (written last)
#   fw/.stage/       a download in progress (removed at the start of the next one)
#   ca.der, ca.json  the trust store (host_tools/fleet/trust.py): the roots back to back, and
#                    {"version": N, "certs": [...]}; a trust-store update replaces both
#   *.new            a trust-store download in progress
import gc
import hashlib
import json
import os
import sys
from binascii import hexlify

from firmware.app import ota
from firmware.runtime import storage

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_CHUNK = const(512)         # bytes read from the TLS socket at a time (one buffer, reused)
_PROGRESS_STEP = const(25)  # report progress every this many percent (each one a twin patch)
FW = "fw"
BOOT = "boot.json"
STAGE = ".stage"


def _setting(cfg, key, default):
    # config.json's ota_trial_s (300: an update must connect and read its twin this soon, or it
    # goes back) and ota_retry_s (30: the first wait after a failed update, doubling to an hour);
    # read here, not in storage.load_config, so a device that never updates does not hold them.
    v = cfg.get(key, default)
    return v if type(v) is int and v > 0 else default


class Failed(Exception):
    # An update that did not happen; str(e) is the reason reported in the twin.
    pass


def read_json(path):
    data = storage.read_bytes(path)
    try:
        obj = json.loads(data) if data else None
    except ValueError:
        obj = None
    return obj if type(obj) is dict else None


def write_json(path, obj):
    storage.write_atomic(path, json.dumps(obj).encode())


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def rmtree(path):
    try:
        mode = os.stat(path)[0]
    except OSError:
        return
    if mode & 0x4000:
        for name in os.listdir(path):
            rmtree(path + "/" + name)
        os.rmdir(path)
    else:
        os.remove(path)


def _makedirs(path):
    cur = ""
    for part in path.split("/"):
        cur = cur + "/" + part if cur or path[:1] == "/" else part
        if part and not _exists(cur):
            os.mkdir(cur)


def free_bytes(path):
    try:
        st = os.statvfs(path)
        return st[0] * st[4]      # f_bsize * f_bavail
    except (AttributeError, OSError):
        return None


class _Tls:
    # What urequests imports as `ussl` while we download: it wraps the connected socket with
    # TLS that verifies the server against the device's trust store (CERT_REQUIRED + SNI),
    # and bounds every read by `timeout` seconds (a stalled server is an error, not a hang).
    def __init__(self, ca, timeout):
        self.ca = ca
        self.timeout = timeout

    def wrap_socket(self, sock, server_hostname=None):
        import ssl
        sock.settimeout(self.timeout)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        for der in self.ca:        # MicroPython's cadata takes one DER certificate a call
            ctx.load_verify_locations(cadata=der)
        return ctx.wrap_socket(sock, server_hostname=server_hostname)


def get(url, ca, timeout):
    # urequests.get over verified TLS; the response's status checked, its body still unread.
    if url[:8] != "https://":
        raise Failed("not https")
    saved = sys.modules.get("ussl")
    sys.modules["ussl"] = _Tls(ca, timeout)
    try:
        import urequests
        r = urequests.get(url)
    finally:
        if saved is None:
            del sys.modules["ussl"]
        else:
            sys.modules["ussl"] = saved
    if r.status_code != 200:
        r.close()
        raise Failed("http %d" % r.status_code)
    return r


def probe(host, port, name, ca, timeout):
    # A TLS handshake with the hub using only the roots `ca` (a tuple of DER certificates):
    # would this trust store verify it?
    import socket
    import ssl
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        s.settimeout(timeout)
        s.connect(ai[-1])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        for der in ca:
            ctx.load_verify_locations(cadata=der)
        s = ctx.wrap_socket(s, server_hostname=name)
    finally:
        s.close()


class Updater:
    # One kind of update: "firmware" (a version into fw/<v>, switched at boot) or "trustStore"
    # (the CA file, replaced in place). The device calls want() with the desired value from
    # every twin document, due(now) each loop second, and apply(now, poll) when due; apply
    # blocks for the download but calls poll() after every chunk (the device handles presses
    # there). `report(state)` is called on every phase change (a reported-property patch).
    def __init__(self, kind, folder, cfg, ca, current, report, rand):
        self.kind = kind
        self.dir = folder
        self.cfg = cfg
        self.ca = ca
        self.current = current
        self.report = report
        self.rand = rand
        self.fw = storage.join(folder, FW)
        self.spec = None          # the desired update still to apply
        self.refused = None       # a desired value refused for good (until it changes)
        self.attempt = 0
        self.next_at = 0
        self.trial_until = 0      # firmware on trial: confirm before this time
        self.peak = 0             # peak gc.mem_alloc() during the last apply (garbage included)
        self.base = 0             # gc.mem_alloc() after a collect, as it began
        self.retry_in = None      # seconds to the next attempt after the last failure
        self.state = ota.state(ota.IDLE, current)
        self.bad = ()             # versions that were rolled back: never installed again
        if kind == "firmware":
            self._boot_state()
        elif current:     # a trust store installed over the air (it verified the hub first)
            self.state = ota.state(ota.CONFIRMED, current)

    # --- what the device asks for ------------------------------------------------------------

    def _boot_state(self):
        b = read_json(storage.join(self.fw, BOOT)) or {}
        if b.get("rolledBack"):
            self.bad = (b["rolledBack"],)
            self.state = ota.state(ota.ROLLED_BACK, b["rolledBack"], b.get("reason"))
        elif b.get("trial") and b.get("active") == self.current:
            self.state = ota.state(ota.TRIAL, self.current)
        elif b.get("active") == self.current and self.current:
            self.state = ota.state(ota.CONFIRMED, self.current)

    def start_trial(self, now):
        if self.state["phase"] == ota.TRIAL:
            self.trial_until = now + _setting(self.cfg, "ota_trial_s", 300)

    def want(self, value, now):
        # The desired value of this kind (None when the twin has none).
        spec, why = ota.desired(value)
        if why:
            if self.refused != value:
                self.refused = value
                self.spec = None
                self._set(ota.FAILED, value.get("version") if type(value) is dict else None, why)
            return
        if spec is None or spec == self.spec or spec == self.refused:
            return
        v = spec["version"]
        if self.kind == "firmware":
            if v in self.bad:
                self.refused = spec
                if self.state["phase"] != ota.ROLLED_BACK:
                    self._set(ota.FAILED, v, "rolled back")
                return
            if not ota.newer(v, self.current):
                return            # what runs already, or older: nothing to do
        elif not ota.newer(v, self.current or "0"):
            return
        self.spec = spec
        self.attempt = 0
        self.next_at = now

    def due(self, now):
        return self.spec is not None and now >= self.next_at and not self.trial_until

    def confirm(self):
        # Connected and read the twin: the version on trial stays.
        if self.state["phase"] != ota.TRIAL:
            return False
        path = storage.join(self.fw, BOOT)
        b = read_json(path) or {}
        write_json(path, {"active": b.get("active"), "previous": b.get("previous"), "trial": 0})
        self.trial_until = 0
        self._set(ota.CONFIRMED, self.current)
        return True

    def trial_over(self, now):
        # True when the trial ran out without a confirm: boot.json now says go back.
        if not self.trial_until or now < self.trial_until:
            return False
        import ota_boot
        path = storage.join(self.fw, BOOT)
        b = read_json(path) or {"active": self.current}
        write_json(path, ota_boot.rolled_back(b, "not connected within the trial"))
        self.trial_until = 0
        return True

    # --- doing it ----------------------------------------------------------------------------

    def _set(self, phase, version, reason=None, progress=None):
        self.state = ota.state(phase, version, reason, progress)
        self.report(self.kind, self.state)

    def apply(self, now, poll):
        # -> True when installed (the device restarts), False when it failed (reported; a
        # later retry with backoff, or none for a permanent reason).
        spec = self.spec
        self.retry_in = None
        gc.collect()
        self.base = self.peak = gc.mem_alloc()
        try:
            if self.kind == "firmware":
                self._firmware(spec, poll)
            else:
                self._trust(spec, poll)
            self.spec = None
            return True
        except Failed as e:
            why = str(e)
        except OSError as e:          # timeouts, refused connections, a full filesystem
            why = "network or storage: %s" % (e.args[0] if e.args else e)
        except MemoryError:
            why = "out of memory"
        except ValueError as e:       # TLS verification, a bad status line
            why = "bad response: %s" % e
        finally:
            gc.collect()
        if why.split(":")[0] in ota.PERMANENT or why in ota.PERMANENT:
            self.refused = spec
            self.spec = None
        else:
            wait = int(ota.retry_in(self.attempt, self.rand(), _setting(self.cfg, "ota_retry_s", 30)))
            self.next_at = now + wait
            self.attempt += 1
            self.retry_in = wait
        self._set(ota.FAILED, spec["version"], why)
        return False

    def _mem(self):
        a = gc.mem_alloc()
        if a > self.peak:
            self.peak = a

    def _manifest(self, spec):
        self._set(ota.DOWNLOADING, spec["version"], progress=0)
        r = get(spec["url"], self.ca, self.cfg["timeout_s"])
        try:
            data = r.raw.read(spec["size"] + 1)
        finally:
            r.close()
        if len(data) != spec["size"]:
            raise Failed("manifest size")
        if hexlify(hashlib.sha256(data).digest()).decode() != spec["sha256"]:
            raise Failed("manifest hash")
        try:
            m = json.loads(data)
        except ValueError:
            raise Failed("bad manifest")
        got = ota.check_manifest(m, spec, self.kind, self.current)
        if type(got) is str:
            raise Failed(got)
        return data, m, got

    def _download(self, spec, m, files, total, target, poll):
        # The bundle, streamed file by file into target(path) -> the path to write; each file's
        # SHA-256 computed on the way. Never more than one chunk of it in RAM.
        r = get(ota.sibling_url(spec["url"], m.get("bundle", "bundle.bin")), self.ca, self.cfg["timeout_s"])
        buf = bytearray(_CHUNK)
        mv = memoryview(buf)
        done = 0
        said = 0
        try:
            for path, size, sha in files:
                h = hashlib.sha256()
                out = target(path)
                with open(out, "wb") as f:
                    left = size
                    while left:
                        n = r.raw.readinto(mv[:min(_CHUNK, left)])
                        if not n:
                            raise Failed("truncated")
                        f.write(mv[:n])
                        h.update(mv[:n])
                        left -= n
                        done += n
                        self._mem()
                        pct = done * 100 // total if total else 100
                        if pct >= said + _PROGRESS_STEP:
                            said = pct - pct % _PROGRESS_STEP
                            self._set(ota.DOWNLOADING, spec["version"], progress=said)
                        poll()
                if hexlify(h.digest()).decode() != sha:
                    raise Failed("hash " + path)
        finally:
            r.close()

    def _verify(self, spec, files, where):
        # What is on flash now, read back and hashed again.
        self._set(ota.VERIFYING, spec["version"])
        buf = bytearray(_CHUNK)
        for path, size, sha in files:
            h = hashlib.sha256()
            n = 0
            with open(where(path), "rb") as f:
                while True:
                    k = f.readinto(buf)
                    if not k:
                        break
                    h.update(memoryview(buf)[:k])
                    n += k
            if n != size or hexlify(h.digest()).decode() != sha:
                raise Failed("hash on flash " + path)
            self._mem()

    def _firmware(self, spec, poll):
        raw, m, (files, total, need) = self._manifest(spec)
        free = free_bytes(self.dir)
        if free is not None and free < need:
            raise Failed("no space: %d bytes free, %d needed" % (free, need))
        stage = storage.join(self.fw, STAGE)
        rmtree(stage)
        _makedirs(stage)

        def staged(path):
            p = stage + "/" + path
            _makedirs(p[:p.rfind("/")])
            return p

        self._download(spec, m, files, total, staged, poll)
        self._verify(spec, files, lambda p: stage + "/" + p)
        self._set(ota.INSTALLING, spec["version"])
        with open(stage + "/manifest.json", "wb") as f:   # the slot is whole once this exists
            f.write(raw)
        slot = storage.join(self.fw, spec["version"])
        rmtree(slot)
        os.rename(stage, slot)
        self._prune(spec["version"])
        # the switch: one atomic write; the next boot runs the new version on trial
        prev = self.current if _exists(storage.join(self.fw, self.current + "/manifest.json")) else None
        write_json(storage.join(self.fw, BOOT), {"active": spec["version"], "previous": prev,   # None: factory
                                                 "trial": 1, "boots": 0})

    def _prune(self, keep):
        # Installed versions other than the new one and the one running now: flash is small.
        try:
            names = os.listdir(self.fw)
        except OSError:
            return
        for name in names:
            if name not in (keep, self.current, STAGE, BOOT, BOOT + ".tmp"):
                rmtree(self.fw + "/" + name)

    def _trust(self, spec, poll):
        # The bundle's two files (ca.der, ca.json) to *.new, hashed and read back; the roots must
        # verify the hub before they replace the old ones. ca.der goes first: a power cut
        # between the two renames leaves the old version number, so the same bundle installs again.
        raw, m, (files, total, need) = self._manifest(spec)
        if [f[0] for f in files] != ["ca.der", "ca.json"]:
            raise Failed("bad manifest")
        cfg = self.cfg
        target = {"ca.der": storage.join(self.dir, cfg["ca_file"]), "ca.json": storage.join(self.dir, storage.TRUST)}
        self._download(spec, m, files, total, lambda p: target[p] + ".new", poll)
        self._verify(spec, files, lambda p: target[p] + ".new")
        try:
            with open(target["ca.der"] + ".new", "rb") as f:
                ca = storage.split_der(f.read())
            t = read_json(target["ca.json"] + ".new") or {}
            if str(t.get("version")) != spec["version"]:
                raise Failed("other version")
            probe(cfg["host"], cfg["port"], cfg["hostname"] or cfg["host"], ca, cfg["timeout_s"])
        except ValueError:          # "not correctly signed by the trusted CA", not a certificate
            raise Failed("would not verify the hub")
        finally:
            ca = None
        self._set(ota.INSTALLING, spec["version"])
        for p in ("ca.der", "ca.json"):
            _replace(target[p] + ".new", target[p])


def _replace(src, dst):
    try:
        os.rename(src, dst)         # atomic where the filesystem renames over a file
    except OSError:
        os.remove(dst)
        os.rename(src, dst)


class Updates:
    # The device's two updaters and what its loop asks of them (firmware/runtime/device.py
    # imports this module only when there is an update to do, a trial or a rollback).
    def __init__(self, dev):
        self.dev = dev
        rand = dev.hal.rand
        self.fw = Updater("firmware", dev.dir, dev.cfg, dev._ca, dev.version, self._changed, rand)
        self.all = (self.fw, Updater("trustStore", dev.dir, dev.cfg, dev._ca, dev.trust, self._changed, rand))
        dev.hal.event(ota="firmware", **self.fw.state)

    def _changed(self, kind, st):
        self.dev.hal.event(ota=kind, **st)
        if st["phase"] == ota.INSTALLING:
            # the one step where a press is not handled (switch, then reset): say so
            self.dev.hal.show("updating", ("Updating", ("to " + st["version"])[:16], "Press again in", "a few seconds"))
        if self.dev.link.online():
            self.dev._report({})

    def reported(self, patch):
        # The runtime's reported keys firmwareUpdate and trustStoreUpdate, into `patch`.
        for u in self.all:
            patch[u.kind + "Update"] = u.state

    def desired(self, body, full):
        # A twin document: a full GET (`full`) or a desired patch.
        try:
            doc = json.loads(body)
        except ValueError:
            return              # the app counted it
        if full:
            doc = doc.get("desired") if type(doc) is dict else None
        if type(doc) is not dict:
            return
        now = self.dev._now()
        for u in self.all:
            if full or u.kind in doc:
                u.want(doc.get(u.kind), now)
        if full and self.fw.confirm():     # connected and read the twin: this version stays
            self.dev.hal.event(ota_confirmed=self.dev.version)
        elif full and self.dev.link.online():
            # the app's reconcile of a full twin deletes reported keys it does not own: ours again
            self.dev._report({})

    def tick(self, now):
        # Once a second. True when the device must reset: an update installed, or a trial that
        # ran out (boot.json already says go back). A due update blocks while it downloads, but
        # presses are handled after every chunk.
        fw = self.fw
        if fw.state["phase"] == ota.TRIAL and not fw.trial_until:
            fw.start_trial(now)     # the first loop second of a version on trial
        if fw.trial_over(now):
            self.dev.hal.event(ota_rollback=self.dev.version)
            return True
        for u in self.all:
            if u.due(now) and self.dev.link.online():
                ok = u.apply(now, self._poll)
                self.dev.hal.event(ota_done=u.kind, ok=ok, ota_peak=u.peak, ota_base=u.base,
                                   retry_in=u.retry_in)
                return ok
        return False

    def _poll(self):
        self.dev._gestures(1)     # presses during a download (1 ms: the unix HAL then reads its input)
