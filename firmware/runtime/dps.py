# Registration with the Device Provisioning Service over MQTT/TLS, on the link's own client
# (one packet codec, one TLS set-up): connect as {idScope}/registrations/{registrationId}, send
# the register request, wait retry-after, poll the operation until DPS says which hub and which
# device id. What each answer means is decided by firmware/iothub/dps.py (pure).
#
# Dps(cfg_dps, key, ca, timeout).register(now, wait) -> one of
#   ("assigned", hub host, device id)   ("refused", reason)   ("unreachable", reason)
# `wait(seconds)` sleeps while the device stays responsive (gestures); False aborts.
# Only the device key is here: the group key never is on the device.
import gc

from umqtt.simple import MQTTException

from firmware.iothub import dps, mqtt, sas, topics
from firmware.runtime.link import _Client

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
        c = _Client(reg, cfg["host"], cfg["port"], topics.dps_username(scope, reg),
                    self._keepalive, self._ca, cfg["host"], self._timeout)
        self.stats["registrations"] += 1
        try:
            try:
                c.pswd = sas.token(topics.dps_resource(scope, reg), self._key, int(now) + _TOKEN_S,
                                   "registration")
                c.connect(clean_session=True)
                c.subscribe_all(((topics.DPS_RES_FILTER, 1),))
            except MQTTException as e:
                return ("refused", "CONNACK %s" % (e.args[0] if e.args else "?"))
            except sas.SasError:
                return ("refused", "device key is not base64")
            rid = 1
            c.publish(topics.dps_register(str(rid)), dps.register_body(reg), qos=1, pid=rid)
            for _ in range(_POLLS_MAX):
                res = self._answer(c, str(rid))
                if res[0] != "wait":
                    return res
                if not wait(res[2]):
                    return ("unreachable", "stopped")
                rid += 1
                self.stats["polls"] += 1
                c.publish(topics.dps_status(str(rid), res[1]), b"", qos=1, pid=rid)
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
                    res = topics.parse_dps_response(topic.decode())
                except (ValueError, UnicodeError):
                    res = None
                if res is not None and res[1] == rid:
                    a = dps.answer(res[0], res[2], msg)
                    return ("unreachable", "DPS busy") if a[0] == "retry" else a
            c._await(mqtt.PUBLISH)     # the link's bounded blocking read, while connecting
