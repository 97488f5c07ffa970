# Registration with the Device Provisioning Service over MQTT/TLS, on the link's own client
# (one packet codec, one TLS set-up): connect as {idScope}/registrations/{registrationId}, send
# the register request, wait retry-after, poll the operation until DPS says which hub and which
# device id. What each answer means is decided by firmware/iothub/dps.py (pure).
#
# Dps(cfg_dps, key, ca, timeout).register(now, wait) -> one of
#   ("assigned", hub host, device id)   ("refused", reason)   ("unreachable", reason)
#   ("busy", reason, retry-after or None)   DPS throttled (429) or failed (5xx) the request
# `wait(seconds)` sleeps while the device stays responsive (gestures); False aborts.
# Onboarding(device) is the device's side: the cached assignment, registering with the screen
# saying what happens, and when to register again. Only devices whose config has a "dps"
# section import this module, so the others carry none of its code.
# Only the device key is here: the group key never is on the device.
import gc
import json

from umqtt.simple import MQTTException

from firmware.app import screens
from firmware.iothub import dps, mqtt, retry, sas
from firmware.runtime import storage
from firmware.runtime.link import Client

ASSIGNMENT = "assignment.json"   # what DPS assigned: {registration_id, id_scope, host, device_id}

_TOKEN_S = 3600
_POLLS_MAX = 10     # polls of one registration before it counts as a failure


class Dps:
    def __init__(self, cfg, key_b64, ca, timeout=10, keepalive=60):
        self.cfg = cfg
        self._key = key_b64
        self._ca = ca
        self._timeout = timeout
        self._keepalive = keepalive
        self.stats = {"registrations": 0, "polls": 0}

    def register(self, now, wait):
        cfg = self.cfg
        reg, scope = cfg["registration_id"], cfg["id_scope"]
        c = Client(reg, cfg["host"], cfg["port"], dps.dps_username(scope, reg),
                    self._keepalive, self._ca, cfg["host"], self._timeout)
        self.stats["registrations"] += 1
        try:
            try:
                c.pswd = sas.token(dps.dps_resource(scope, reg), self._key, int(now) + _TOKEN_S,
                                   "registration")
                c.connect(clean_session=True)
                c.subscribe_all(((dps.DPS_RES_FILTER, 1),))
            except MQTTException as e:
                return ("refused", "CONNACK %s" % (e.args[0] if e.args else "?"))
            except sas.SasError:
                return ("refused", "device key is not base64")
            rid = 1
            c.publish(dps.dps_register(str(rid)), dps.register_body(reg), qos=1, pid=rid)
            for _ in range(_POLLS_MAX):
                res = self._answer(c, str(rid))
                if res[0] != "wait":
                    return res
                if not wait(res[2]):
                    return ("unreachable", "stopped")
                rid += 1
                self.stats["polls"] += 1
                c.publish(dps.dps_status(str(rid), res[1]), b"", qos=1, pid=rid)
            return ("unreachable", "no assignment after %d polls" % _POLLS_MAX)
        except (OSError, IndexError, ValueError, MemoryError, MQTTException) as e:
            # network, TLS (ValueError: certificate), a broken stream: try again later
            a = getattr(e, "args", None)
            return ("unreachable", str(a[0]) if a else repr(e))
        finally:
            c.disconnect()
            gc.collect()

    def _answer(self, c, rid):
        # Read until DPS answers request `rid` (each read bounded by the socket timeout).
        while True:
            while c.inbox:
                topic, msg, pid = c.inbox.pop(0)
                if pid:
                    c.ack(pid)
                try:
                    res = dps.parse_dps_response(topic.decode())
                except (ValueError, UnicodeError):
                    res = None
                if res is not None and res[1] == rid:
                    a = dps.answer(res[0], res[2], msg)
                    return ("busy", "DPS %d" % res[0], a[1]) if a[0] == "retry" else a
            c.wait_for(mqtt.PUBLISH)     # bounded blocking read: the answer lands in c.inbox


def load_assignment(folder, dps_cfg):
    # The hub and device id DPS assigned to this registration, or None (register first). An
    # assignment for another registration or id scope (the device was provisioned again) or a
    # broken file is not used.
    data = storage.read_bytes(storage.join(folder, ASSIGNMENT))
    try:
        a = json.loads(data) if data else None
        if (a["registration_id"] == dps_cfg["registration_id"] and a["id_scope"] == dps_cfg["id_scope"]
                and a["host"] and a["device_id"]):
            return a
    except (ValueError, KeyError, TypeError):
        pass
    return None


def save_assignment(folder, dps_cfg, host, device_id):
    a = {"registration_id": dps_cfg["registration_id"], "id_scope": dps_cfg["id_scope"],
         "host": host, "device_id": device_id}
    storage.write_atomic(storage.join(folder, ASSIGNMENT), json.dumps(a))
    return a


class Onboarding:
    # The device's side of DPS (firmware/runtime/device.py calls cached(), register(), online(),
    # refused() and reads `due`).

    def __init__(self, dev):
        # storage.SetupError when config.json's dps section is unusable
        self.dev = dev
        cfg = dev.cfg
        d = cfg["dps"]
        if not isinstance(d, dict):
            raise storage.SetupError("config.json: dps must be an object")
        d.setdefault("port", cfg["port"])
        for k in ("id_scope", "registration_id", "host"):
            if not isinstance(d.get(k), str) or not d[k]:
                raise storage.SetupError("config.json: dps has no " + k)
        if not isinstance(d["port"], int) or d["port"] <= 0:
            raise storage.SetupError("config.json: dps port must be a positive integer")
        self.client = Dps(cfg["dps"], dev._key, dev._ca, timeout=cfg["timeout_s"])
        self.due = False        # the loop should register again
        self._again = 0         # re-registrations since the link was last online
        self._not_before = 0    # no re-registration before this (one per backoff period)

    def cached(self):
        # Use the cached assignment, if there is one for this registration.
        a = load_assignment(self.dev.dir, self.dev.cfg["dps"])
        if a is not None:
            self._use(a)
        return a is not None

    def _use(self, a):
        cfg = self.dev.cfg
        cfg["host"], cfg["device_id"] = a["host"], a["device_id"]
        cfg["hostname"] = None          # the TLS name is the assigned hub's

    def register(self):
        # Register until DPS assigns a hub (cached atomically: the next boot goes straight to
        # the hub), then make the link. Between attempts a bounded backoff, and the screen says
        # what happens. False when the device was stopped.
        dev = self.dev
        hal = dev.hal
        self.due = False
        attempt = 0
        while True:
            dev._show_screen(screens.screen("registering"))
            hal.event(dps="registering", attempt=attempt)
            t0 = hal.now()
            res = self.client.register(t0, self._wait)
            if dev.stop is not None:
                return False
            if res[0] == "assigned":
                a = save_assignment(dev.dir, dev.cfg["dps"], res[1], res[2])
                hal.event(dps="registered", hub=res[1], device_id=res[2], seconds=hal.now() - t0)
                dev._show_screen(screens.screen("registered", "", res[1]))
                self._use(a)
                dev._make_link()
                return True
            if res[0] == "refused":     # the enrollment will not have us: a human must act
                wait = retry.delay_for(retry.AUTH, attempt, hal.rand())
                scr = screens.screen("refused", "retry in %d s" % wait, res[1])
            else:
                wait = retry.delay(attempt, hal.rand(), 1, dev.cfg["retry_cap_s"])
                if res[0] == "busy":    # throttled: never again before its retry-after (bounded)
                    wait = max(wait, dps.retry_s(res[2], hal.rand()) or 0)
                    scr = screens.screen("registering", "busy, wait %d s" % wait)
                else:
                    scr = screens.screen("registering", "retry in %d s" % wait)
            attempt += 1
            hal.event(dps=res[0], reason=res[1], retry_in=wait,
                      retry_after=res[2] if res[0] == "busy" else None)
            dev._show_screen(scr)
            if not dev._gestures(int(wait * 1000)):
                return False

    def _wait(self, seconds):
        return self.dev._gestures(int(seconds * 1000))

    def online(self):
        self._again = 0
        self._not_before = 0

    def refused(self, why):
        # The hub refused the assigned identity (CONNACK 4/5) or its name does not resolve:
        # register again, at most once per backoff period.
        hal = self.dev.hal
        now = hal.now()
        if now < self._not_before:
            return
        self._not_before = now + retry.delay_for(retry.AUTH, self._again, hal.rand())
        self._again += 1
        self.due = True
        hal.event(dps="re-register", why=why)
