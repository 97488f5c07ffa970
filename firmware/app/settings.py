# Twin desired settings: defaults, validation, applying a desired document to the order state
# (orders.twin). Pure: no I/O, never raises on what the cloud sends. Loaded only where settings
# change (firmware/app/orders.py: new, restore, twin, twin_too_large); the runtime drops its code
# from the heap afterwards.

from firmware.app import orders, schemas

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

# The rejected map is bounded by its size in the reported twin (keys + reasons), not by a count:
# every rejected setting is listed while they fit (about 40 typical entries), and when a hostile
# desired document has more, _MORE says how many are left out instead of hiding them.
MAX_REJECTED_BYTES = const(2048)
_MORE = "_more"
_MAX_KEY = const(32)


def twin(s, now, doc, version):
    # orders.twin's work: -> its actions (orders.twin ends the event). Desired settings: a patch
    # (topic .../desired/?$version=n, `version` = n) or, without a version, a full twin GET response ({"desired": {...}, "reported": {...}}). doc may be
    # bytes/str JSON or already a dict. A patch is never a full twin, whatever it holds: it
    # changes only the settings it names. The desired $version (`version`, else the one in
    # the document) orders them: the hub can answer a GET built from version n after patch
    # n+1 arrived, so a full twin older than the last applied one, or a patch not newer,
    # changes no setting.
    if type(doc) is not dict:
        doc = schemas.load(doc, orders.MAX_BLOB)[0]
        if type(doc) is not dict:
            orders.count(s, "twin")
            return []
    full = version is None and type(doc.get("desired")) is dict
    if full:
        s["twin_read"] = 1
        rep = doc.get("reported")
        if type(rep) is dict and s["online"]:    # what the cloud has: report only the difference
            s["cloud_reported"] = {k: rep[k] for k in rep if type(k) is str and k[:1] != "$"}
        doc = doc["desired"]
    v = doc.get("$version") if version is None else version
    if type(v) is int:
        if v < s["desired_version"] or (v == s["desired_version"] and not full):
            if v < s["desired_version"]:
                orders.count(s, "oldtwin")
            return []
        s["desired_version"] = v
    acc, rej = apply(s["settings"], doc, full)
    acts = []
    cfg = s["settings"]
    for k in acc:
        if cfg[k] != acc[k]:
            s["unsaved"] = 1
            if k == "displayBrightness":
                acts.append(("brightness", acc[k]))
        cfg[k] = acc[k]
    s["rejected"] = rejected({} if full else s["rejected"], doc, acc, rej)
    for k in rej:
        orders.say(s, now, ("rejected", k, rej[k]))
        break
    return acts


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
    left = MAX_REJECTED_BYTES
    more = 0
    for k in keys:
        if type(k) is not str or k[:1] == "$" or k in ELSEWHERE:
            continue
        if k not in DEFAULTS:
            why = "unknown setting" if desired.get(k) is not None else None
        else:
            v = desired.get(k)
            if v is None:
                v = DEFAULTS[k]
            why = check(k, v)
            if why is None:
                acc[k] = v
        if why is not None:
            k = k[:_MAX_KEY]
            if _cost(k, why) <= left:
                rej[k] = why
                left -= _cost(k, why)
            else:
                more += 1
    if more:
        rej[_MORE] = _more_reason(more)
    return acc, rej


def _cost(k, why):
    return len(k) + len(why) + 6     # "k":"why", in the reported JSON


def _more_reason(n):
    return "%d more not listed" % n


def rejected(old, desired, acc, rej):
    # The rejected map (key -> reason) after `desired` was applied with result (acc, rej):
    # reasons for keys now accepted or set to null leave, the new ones join; within
    # MAX_REJECTED_BYTES in all (new reasons first, then the older ones that still fit; the
    # rest counted under _MORE), however many patches came before.
    out = dict(rej)
    more = 0
    if _MORE in out:
        more = int(out.pop(_MORE).split()[0])
    left = MAX_REJECTED_BYTES
    for k in out:
        left -= _cost(k, out[k])
    gone = [k[:_MAX_KEY] for k in desired if type(k) is str and desired[k] is None] \
        if type(desired) is dict else ()
    for k in old:
        if k == _MORE:   # left out before: not known by name, so still counted (a full
            more += int(old[k].split()[0])     # twin GET starts from an empty map)
            continue
        if k not in out and k not in acc and k not in gone:
            if _cost(k, old[k]) <= left:
                out[k] = old[k]
                left -= _cost(k, old[k])
            else:
                more += 1
    if more:
        out[_MORE] = _more_reason(more)
    return out
