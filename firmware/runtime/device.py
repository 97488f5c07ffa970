# The device's main loop: the only place where the app, the link, storage and the HAL meet.
#
#   hardware gestures, link events, the clock  ->  firmware.app.orders (pure)  ->  actions
#   actions: save (atomic file), show (display), report/publish/method_response (link),
#            brightness/flash (HAL), reboot
#
# Start-up: config.json + secrets.json + CA ("Setup needed" until they are there and sane),
# network, a sane clock ("Clock not set" until NTP answers), then the loop. Every observable
# step is also an event through hal.event() (EVT lines on unix, which the integration
# tests await).
import gc
import json
import sys

from firmware.app import gestures, orders
from firmware.hal import PLATFORM, Hal
from firmware.iothub import retry, sas, topics
from firmware.runtime import files
from firmware.runtime.link import AUTH_ERROR, HOST_NOT_FOUND, Link

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

VERSION = "1.0.0"
_LOOP_MS = const(50)        # longest sleep between loop turns; a gesture or link data wakes it sooner
_REPORT_S = const(300)      # free heap and link counters, while online
_NO_NETWORK_S = const(5)    # no WLAN: look again this much later, before trying the hub
_STATE = "state.json"
_LINK_STATS = ("dropped", "bad_topics", "handler_errors", "renewals", "auth_errors", "connects")
_REPORT_RIDS = const(8)     # reported patches awaiting the hub's answer, newest kept
_CLOCK_MOVED_S = const(30)  # a re-sync that moves the clock more than this explains a refusal


def run(boot=(None, False)):
    # main.py calls this (after ota_boot.select()). A "reboot" from the app restarts the device (a fresh
    # Device on unix, machine.reset() on the ESP32); "restart" (an update installed or rolled
    # back) is a hard reset on both (hal.reset()), so ota_boot selects the version at boot.
    # boot: (the update version running, None for the factory; trial or rollback pending).
    hal = Hal(gestures, sas.epoch_offset)     # what the HAL needs from above, passed down
    if hal.safe_mode():
        print("safe mode: button held at start, app not started")
        return
    try:
        while True:
            r = Device(hal, boot).run()
            if r not in ("reboot", "restart"):
                return r
            if r == "restart":
                hal.reset()     # never returns: ota_boot picks the version at the next boot
            hal.reboot()
    except KeyboardInterrupt:  # Ctrl-C (mpremote sends it): stop the app, link closed on the way out
        hal.watchdog_park()     # first: a board at the REPL must stay there long enough to deploy to
        hal.event(stopped="interrupted")
    except Exception as e:  # a bug; SystemExit still ends the program
        hal.event(crash=repr(e))
        hal.crash(e)


def release(package, *names):
    # package.name served start-up only, or one event: its code leaves the heap (run from .mpy
    # files, as on a stock image, bytecode lives in the GC heap). The next import loads it again.
    p = sys.modules.get(package)
    for name in names:
        sys.modules.pop(package + "." + name, None)
        if p is not None and hasattr(p, name):
            delattr(p, name)


class Device:
    def __init__(self, hal, boot=(None, False)):
        self.hal = hal
        self.dir = hal.storage_dir
        self.state_path = files.join(self.dir, _STATE)
        self.cfg = {}               # config.json, the device key and the CA: read by start.py
        self._key = self._ca = None
        self.link = None
        self.dps = None             # firmware.runtime.dps.Onboarding when config.json has "dps"
        self.s = None
        self.stop = None            # "quit" or "reboot" ends the loop
        self._ign = {}
        self._link_stats = {}
        self._peak = 0
        self._report_at = 0
        self.version = boot[0] or VERSION
        self._pending = boot[1]
        self.updates = None         # ota.Updates once imported (_ota_twin)
        self.trust = None           # the trust store's version (ca.json), read at setup
        self._twin_retry = retry.Backoff()     # the twin GET, until the hub answers 200
        self._report_retry = retry.Backoff()   # a reported patch the hub did not take
        self._report_rids = []
        self._resync = False                   # the hub refused the token: check the clock

    # --- start-up ----------------------------------------------------------------------------

    def run(self):
        hal = self.hal
        gc.collect()
        hal.event(boot=self.version, platform=PLATFORM, heap=hal.mem_free())
        from firmware.runtime import start   # setup, network, clock, the state restored
        ok = start.start(self)
        release("firmware.runtime", "start")  # start-up only: its code leaves the heap
        if not ok:
            return self.stop
        self.hal.watchdog_start()   # only now, fed by every loop turn; it cannot be stopped
        try:
            self._loop()
        finally:
            self.link.close()
        return self.stop

    def _gestures(self, ms, wake=None):
        # Wait (waking early when `wake`, the link's socket, has data), and let a "quit"
        # gesture (unix keyboard/control file) end the device.
        for g in self.hal.wait(ms, wake):
            if g == "quit":
                self.stop = "quit"
            elif self.s is not None:
                self._gesture(g)
        return self.stop is None

    def _make_link(self):
        cfg = self.cfg
        if self.link is not None:
            self.link.close()
        self.link = Link(cfg["host"], cfg["port"], cfg["device_id"], self._key, self._ca,
                         self.hal.rand, token_ttl=cfg["token_ttl_s"], keepalive=cfg["keepalive_s"],
                         timeout=cfg["timeout_s"], retry_cap=cfg["retry_cap_s"],
                         hostname=cfg["hostname"])

    def _now(self):
        return int(self.hal.now())

    # --- the loop ----------------------------------------------------------------------------

    def _loop(self):
        last = 0
        on_link = self._on_link   # bound once: a bound method is a new object each time
        while self._gestures(_LOOP_MS, self.link.pollable()):
            t = self.hal.now()
            if self.link.connect_due(t) and not self.hal.network_up():
                self.link.network_down(t, _NO_NETWORK_S)
            if self._resync:
                t = self._resync_clock(t)
            self.link.step(t, on_link)
            if self.dps is not None and self.dps.due and not self.dps.register():
                break
            now = self._now()
            if now != last:
                last = now
                self._do(orders.tick(self.s, now))
                if self.link.online():
                    self._retries(now)
                if self.link.online() and now >= self._report_at:
                    self._report({})
                if self.updates and self.updates.tick(now):
                    self.stop = "restart"
            self._observe()
            a = gc.mem_alloc()
            if a > self._peak + 1024:   # peak heap in use (garbage included), in 1 KB steps
                self._peak = a
                self.hal.event(peak_alloc=a)

    def _gesture(self, g):
        s, now = self.s, self._now()
        self.hal.event(gesture=g)
        if g == "press":
            b = self.hal.random_bytes(8)
            rid = "".join("%02x" % x for x in b)
            self._do(orders.press(s, now, rid))
        elif g == "long":
            self._do(orders.long_press(s, now))
        elif g == "double":
            self._do(orders.double_press(s, now))

    def _on_link(self, ev):
        # Events from the link, called from the loop (never from inside a socket read).
        s, now, kind = self.s, self._now(), ev[0]
        if kind == "connected":
            if self.dps is not None:
                self.dps.online()
            self.hal.event(link="online", session_present=ev[1])
            self._report_at = now + 2
            self._twin_retry.ok()          # the link sent a fresh GET
            self._report_retry.ok()        # connected() reports everything anyway
            self._report_rids = []
            self._do(orders.connected(s, now))
        elif kind == "disconnected":
            self.hal.event(link="offline", reason=ev[1])
            self._do(orders.disconnected(s, now))
        elif kind == "connect_failed":
            self.hal.event(link="connect_failed", reason=ev[1])
            if self.dps is not None and ev[1] == HOST_NOT_FOUND:
                self.dps.refused(HOST_NOT_FOUND)
        elif kind == "auth_error":
            self.hal.event(link=AUTH_ERROR, code=ev[1], retry_in=ev[2])
            self._resync = True
            self._do(orders.disconnected(s, now, "auth"))
            if self.dps is not None:
                self.dps.refused("CONNACK %s" % ev[1])
        elif kind == "puback":
            self.hal.event(puback=ev[1])
            self._do(orders.published(s, now, ev[1]))
        elif kind == "c2d":
            self.hal.event(c2d=ev[1])
            self._do(orders.c2d(s, now, ev[1], ev[2]))
        elif kind == "twin":                          # ("twin", rid, status, body)
            self._twin_answer(ev[1], ev[2], ev[3], now)
        elif kind == "desired":                       # ("desired", $version, body)
            if ev[2] is None:                         # too large to read
                self._twin_too_large(now)
            else:
                self._settled(orders.twin(s, now, ev[2], ev[1]))
                self._ota_twin(ev[2], False)
        elif kind == "method":                        # ("method", rid, name, body)
            self.hal.event(method=ev[2])
            try:
                acts = orders.method(s, now, ev[1], ev[2], ev[3])
            finally:
                release("firmware.app", "methods")  # methods are rare: their code leaves the heap
            self._do(acts)

    # --- actions -----------------------------------------------------------------------------

    def _do(self, actions):
        for a in actions:
            kind = a[0]
            if kind == "save":
                files.write_atomic(self.state_path, a[1])
                self.hal.event(saved=len(a[1]))
            elif kind == "show":
                self._show_screen(a[1:])
            elif kind == "publish":
                topic = topics.telemetry(self.cfg["device_id"], a[2])
                ok = self.link.publish(topic, a[3], qos=1, tag=a[1])
                self.hal.event(publish=a[1], queued=ok, online=self.link.online())
            elif kind == "report":
                self._report(a[1])
            elif kind == "method_response":           # ("method_response", rid, status, body)
                self.link.method_response(a[1], a[2], json.dumps(a[3]))
                self.hal.event(method_response=a[2], rid=a[1])
            elif kind == "brightness":
                self.hal.brightness(a[1])
            elif kind == "flash":
                self.hal.flash(a[1])
            elif kind == "reboot":
                self.stop = "reboot"

    def _settled(self, actions):
        # after orders.twin / twin_too_large: app/settings.py leaves the heap until the next twin
        release("firmware.app", "settings")
        self._do(actions)

    def _show_screen(self, scr):
        self.hal.show(scr[0], scr[1])

    # --- what the hub must take: the twin GET, reported patches, a token ------------------------

    def _twin_answer(self, rid, status, body, now):
        # The hub answers twin GETs and reported patches on the same topic, told apart by rid.
        if rid in self._report_rids:
            self._report_rids.remove(rid)
            if status < 300:
                if not self._report_retry.due:
                    self._report_retry.ok()
            elif not self._report_retry.due:
                # not taken (429 throttled, 5xx, 400...): the whole reported state goes again
                # when the backoff ends, not this patch (a newer one may have followed it)
                wait = self._report_retry.fail(now, status, self.hal.rand())
                self.hal.event(report_status=status, rid=rid, retry_in=int(wait))
        elif status == 200 and body is None:
            self._twin_too_large(now)
        elif status == 200:
            self._twin_retry.ok()
            self._settled(orders.twin(self.s, now, body))
            self._ota_twin(body, True)
        else:
            # a GET the hub did not answer (429, 5xx): without it a new button has no product
            wait = self._twin_retry.fail(now, status, self.hal.rand())
            self.hal.event(twin_status=status, rid=rid, retry_in=int(wait))

    def _twin_too_large(self, now):
        # The twin (a GET answer or a desired patch) is bigger than the device can read: the
        # cloud is told (reported "rejected"), and the GET is tried again rarely, in case the
        # twin was trimmed (413: the FATAL policy, minutes).
        self.hal.event(twin_too_large=True)
        self._settled(orders.twin_too_large(self.s, now))
        if not self._twin_retry.due:
            self._twin_retry.fail(now, 413, self.hal.rand())

    def _retries(self, now):
        # Called once a second while online: requests whose backoff has ended go again.
        if self._twin_retry.due and now >= self._twin_retry.due:
            self._twin_retry.due = 0
            self.hal.event(twin_get=self.link.twin_get(), attempt=self._twin_retry.attempt)
        if self._report_retry.due and now >= self._report_retry.due:
            self._report_retry.due = 0
            self.hal.event(report_again=self._report_retry.attempt)
            self._do(orders.report_again(self.s, now))

    def _resync_clock(self, t):
        # The hub refused the token (CONNACK 4/5). A wrong clock makes every token refused
        # (expired, or not valid yet), so the time is synced again before the next attempt
        # and the screen says so; if that moved the clock, the refusal was the clock: try
        # at once. -> the (new) time.
        self._resync = False
        self._do(orders.clock_check(self.s, self._now()))
        ok = self.hal.sync_time()
        now = self.hal.now()
        moved = now - t
        self.hal.event(clock="resync", ok=ok, moved=int(moved))
        if moved > _CLOCK_MOVED_S or moved < -_CLOCK_MOVED_S:
            self.link.retry_at(now)
        return now

    def _report(self, patch):
        # The only place a reported-properties patch is sent. The app owns every key of the
        # reported document (orders.reported) except these, which the runtime owns and
        # sends with every patch: the app's patch may name them only to drop a stale value
        # (a full-twin reconcile), and they are overwritten here.
        patch = dict(patch)
        patch["freeHeap"] = self.hal.mem_free()
        patch["link"] = self.link.stats
        patch["trustStoreVersion"] = self.trust
        if self.updates:
            self.updates.reported(patch)
        rid = self.link.report(json.dumps(patch))
        if rid is not None:
            self._report_rids.append(rid)
            if len(self._report_rids) > _REPORT_RIDS:
                self._report_rids.pop(0)
        self._report_at = self._now() + _REPORT_S
        self.hal.event(report=sorted(patch), heap=patch["freeHeap"])

    def _observe(self):
        # Counters of ignored input (app) and of dropped/bad messages (link), when they change.
        ign = orders.ignored(self.s)
        if ign != self._ign:
            self._ign = dict(ign)
            self.hal.event(ignored=self._ign)
        # Runs every loop turn, so it allocates nothing unless a counter moved (no comprehension
        # either: closing over `st` would put it in a heap cell on every call).
        st, last = self.link.stats, self._link_stats
        for k in _LINK_STATS:
            if st[k] != last.get(k):
                last = {}
                for j in _LINK_STATS:
                    last[j] = st[j]
                self._link_stats = last
                self.hal.event(link_stats=last)
                return

    # --- over-the-air updates: firmware/runtime/ota.py, imported only when needed -----------

    def _ota_twin(self, body, full):
        # The updates (ota.Updates) are imported the first time there is something to do: a twin
        # that names one (no JSON parse here), a version on trial or a rollback to report. On
        # unix their bytecode would sit in the heap. Not while it does not fit (tried again later).
        if body is None or self.updates or b'"firmware"' in body or b'"trustStore"' in body:
            if self.updates is None:
                gc.collect()
                try:
                    from firmware.runtime import ota
                    self.updates = ota.Updates(self)
                except MemoryError:
                    self.hal.event(ota="firmware", phase="failed", reason="out of memory")
                    return
            if body is not None:
                self.updates.desired(body, full)
