# Twin desired settings: defaults, validation, applying a patch, and reported-property patches.
# Pure: no I/O, never raises on what the cloud sends.

from firmware.app import schemas

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# sku "" means not set: the button shows "Setup needed" and does not order.
DEFAULTS = {"sku": "", "quantity": 1, "maxOpenOrders": 1, "cancelWindowSeconds": 60,
            "displayBrightness": 128, "resendSeconds": 60}
# integer settings: key -> (lowest, highest)
RANGES = {"quantity": (1, schemas.QUANTITY_MAX), "maxOpenOrders": (1, 10), "cancelWindowSeconds": (0, 3600),
          "displayBrightness": (0, 255), "resendSeconds": (10, 3600)}

# desired keys that are not settings: over-the-air updates (firmware/app/ota.py), which the
# runtime acts on; apply() neither takes nor rejects them
ELSEWHERE = ("firmware", "trustStore")

_MAX_REJECTED = const(8)   # a hostile desired document cannot grow the reported one without end
_MAX_KEY = const(32)


def check(key, value):
    # None if value is valid for key, else a short reason.
    if key == "sku":
        if type(value) is not str or len(value) > schemas.SKU_MAX:
            return "string of up to %d" % schemas.SKU_MAX
        if value and not schemas.is_sku(value):      # "" is allowed: not set
            return "A-Z a-z 0-9 - _ ."
        return None
    lo, hi = RANGES[key]
    if type(value) is not int or not lo <= value <= hi:  # bool is not int here (nor on MP)
        return "int %d..%d" % (lo, hi)
    return None


def apply(cfg, desired, full=False):
    # desired: a desired-properties patch (or, with full=True, the whole desired section of a
    # twin GET, where a missing key means "back to the default"). cfg is not changed.
    # -> (accepted {key: value}, rejected {key: reason}). null restores the default; "$..."
    # keys (e.g. $version) are skipped; unknown keys are rejected so the cloud sees typos,
    # unless set to null: that is how a typo is deleted from a twin, not a new mistake.
    if type(desired) is not dict:
        return {}, {"desired": "not an object"}
    acc = {}
    rej = {}
    keys = list(desired)
    if full:
        keys += [k for k in DEFAULTS if k not in desired]
    for k in keys:
        if type(k) is not str or k[:1] == "$" or k in ELSEWHERE:
            continue
        if k not in DEFAULTS:
            if desired.get(k) is not None and len(rej) < _MAX_REJECTED:
                rej[k[:_MAX_KEY]] = "unknown setting"
            continue
        v = desired.get(k)
        if v is None:
            v = DEFAULTS[k]
        why = check(k, v)
        if why is None:
            acc[k] = v
        elif len(rej) < _MAX_REJECTED:
            rej[k] = why
    return acc, rej


def rejected(old, desired, acc, rej):
    # The rejected map (key -> reason) after `desired` was applied with result (acc, rej):
    # reasons for keys now accepted or set to null leave, the new ones join; at most
    # _MAX_REJECTED entries in all (new reasons first), however many patches came before.
    out = dict(rej)
    gone = [k[:_MAX_KEY] for k in desired if type(k) is str and desired[k] is None] \
        if type(desired) is dict else ()
    for k in old:
        if len(out) >= _MAX_REJECTED:
            break
        if k not in out and k not in acc and k not in gone:
            out[k] = old[k]
    return out


def diff(old, new):
    # The reported-properties patch that turns `old` into `new`: changed keys, nested dicts
    # patched key by key, keys that disappeared set to None (null deletes in a twin patch).
    p = {}
    for k in new:
        a = old.get(k)
        b = new[k]
        if type(a) is dict and type(b) is dict:
            d = diff(a, b)
            if d:
                p[k] = d
        elif k not in old or a != b or type(a) is not type(b):
            p[k] = b
    for k in old:
        if k not in new:
            p[k] = None
    return p
