# The fuzzer behind tests/core/test_app_fuzz.py and `make fuzz`: seeded random event sequences
# driven into the order core (firmware/app/orders.py), the settings, the schemas and the topic
# parsers, checking the contract in firmware/app/README.md after every event. Runs the same on
# CPython and on the Unix MicroPython: the generator is a xorshift written here, so one seed
# gives the same sequence on both interpreters.
#
#   python -m tests.core.fuzz [CASES [SEED]]       (micropython tests/core/fuzz.py ...)
#
# A failure raises AssertionError naming the seed and the case; FUZZ_SEED=<seed> FUZZ_CASES=1
# replays exactly that case.
import json

from firmware.app import orders, schemas, screens, settings
from firmware.iothub import dps, topics

T = 1800000000
MAX_OPEN = settings.RANGES["maxOpenOrders"][1]
# The most the state can hold (host_tools/bench/mp_state_blob.py measures what a device can
# be driven to; this is the ceiling the fuzzer holds every saved blob to).
BLOB_BOUND = orders.MAX_BLOB * 3 // 4
REASONS = ("props", "type", "ct", "body", "size", "json", "doc", "id", "cid", "status",
           "orderId", "unknown", "duplicate", "stale", "twin", "oldtwin", "blob", "cfg")
ACTIONS = {"save": 0, "show": 1, "report": 2, "brightness": 3, "publish": 3,
           "method_response": 3, "flash": 3, "reboot": 3}


class Rng:
    # xorshift32: small, the same on every interpreter, never 0
    def __init__(self, seed):
        self.x = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def next(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x

    def below(self, n):
        return self.next() % n

    def choice(self, seq):
        return seq[self.next() % len(seq)]

    def chance(self, percent):
        return self.next() % 100 < percent

    def hex16(self):
        return "%08x%08x" % (self.next(), self.next())

    def text(self, n):
        return "".join(self.choice(_CHARS) for _ in range(self.below(n + 1)))

    def raw(self, n):
        return bytes(self.below(256) for _ in range(self.below(n + 1)))


_CHARS = ("a", "Z", "0", "9", "-", "_", ".", " ", "\"", "\\", "{", "}", "[", "]", ":", ",", "/",
          "?", "&", "=", "%", "$", "+", "\x00", "\x7f", "\u00e9", "\u2603", "\U0001F600")
_JSON_BITS = (b"{", b"}", b"[", b"]", b":", b",", b'"', b"1", b"-1", b"1e999", b"null", b"true",
              b'"x"', b"\\u0000", b"\\ud800", b"\xff", b" ", b":1", b"2:1")


# --- contract checks -----------------------------------------------------------------------

def well_formed(acts):
    # Every action is documented, in the documented order: save first, reboot last.
    assert type(acts) is list, acts
    last = 0
    for i, a in enumerate(acts):
        assert type(a) is tuple and a and a[0] in ACTIONS, a
        rank = ACTIONS[a[0]]
        assert rank >= last, ("out of order", [x[0] for x in acts])
        last = rank
        kind = a[0]
        if kind == "save":
            assert i == 0 and type(a[1]) is bytes, a
        elif kind == "show":
            assert a[1] in screens.TEXT and type(a[2]) is tuple and len(a[2]) <= screens.LINES
            for line in a[2]:
                assert type(line) is str and len(line) <= screens.WIDTH, a
                for c in line:
                    assert " " <= c <= "~", a
        elif kind == "brightness":
            assert type(a[1]) is int and 0 <= a[1] <= 255, a
        elif kind == "report":
            assert type(a[1]) is dict and a[1], a
            json.dumps(a[1])
        elif kind == "publish":
            tag, props, body = a[1], a[2], a[3]
            assert props["$.mid"] == tag and type(body) is bytes, a
            d = json.loads(body)
            assert d["type"] == props["messageType"], a
            if d["type"] == schemas.STATUS_QUERY:
                ids = d["orderRequestIds"]
                assert tag[0] == "q" and 0 < len(ids) <= schemas.QUERY_MAX, a
                assert sorted(ids) == ids and len(set(ids)) == len(ids), a
                for rid in ids:
                    assert schemas.is_id(rid), a
            else:
                assert tag == schemas.mid(d["orderRequestId"], d["type"]), a
        elif kind == "method_response":
            assert type(a[2]) is int and a[2] in (200, 400, 404, 409), a
            json.dumps(a[3])
        elif kind == "flash":
            assert type(a[1]) is int and 1 <= a[1] <= 60, a
        elif kind == "reboot":
            assert i == len(acts) - 1, acts
    return acts


def persisted(s):
    # what a save keeps, as comparable data
    return (s["seq"], sorted(s["settings"].items()),
            sorted((rid, list(s["orders"][rid][:6])) for rid in s["orders"]),   # not "heard at"
            [(e[0], e[1], bytes(e[2])) for e in s["outbox"]])


def restores_the_same(blob, s):
    # A blob the device saved restores cleanly to the same persisted state.
    r = orders.new("f")
    acts = well_formed(orders.restore(r, T, blob))
    assert not orders.ignored(r), ("own blob refused", orders.ignored(r), blob[:200])
    assert not acts or acts[0][0] != "save", acts
    assert persisted(r) == persisted(s), (persisted(r), persisted(s))


def bounded(s, blob):
    assert blob is None or len(blob) <= BLOB_BOUND, len(blob)
    opened = [r for r in s["orders"] if not schemas.is_final(s["orders"][r][0])]
    assert len(opened) <= MAX_OPEN and len(s["orders"]) - len(opened) <= orders.KEEP_FINISHED
    assert len(s["outbox"]) <= 2 * len(opened)
    for k in orders.ignored(s):
        assert k in REASONS, k
    assert len(s["rejected"]) <= 8


# --- one case ----------------------------------------------------------------------------

class Case:
    def __init__(self, rng):
        self.rng = rng
        self.s = orders.new("9.9.9")
        self.now = T
        self.allowed = set()      # rids a press was allowed to order
        self.rank = {}            # rid -> highest rank seen
        self.blob = None          # the last blob saved
        self.version = 0          # desired $version the "cloud" is at
        self.events = 0
        self.queried = None       # (time, orderRequestIds) of the last statusQuery

    def run(self, fn, *args):
        acts = well_formed(fn(self.s, self.now, *args))
        self.events += 1
        for a in acts:
            if a[0] == "save":
                self.blob = a[1]
            elif a[0] == "publish" and a[2]["messageType"] == schemas.STATUS_QUERY:
                self.check_query(a, fn)
            elif a[0] == "publish" and not a[1].endswith("-cancel"):
                assert a[1] in self.allowed, ("published an order nobody pressed for", a)
        if acts and acts[0][0] == "save":
            restores_the_same(self.blob, self.s)
        for rid in self.s["orders"]:
            r = schemas.STATUS_RULE[self.s["orders"][rid][0]][0]
            assert r >= self.rank.get(rid, 0), ("status went back", rid, self.s["orders"][rid])
            self.rank[rid] = r
        bounded(self.s, self.blob)
        return acts

    def check_query(self, a, fn):
        # a statusQuery: only after a connect or on a tick, at most one per resendSeconds (a
        # clock that went back excepted), listing exactly the open orders the cloud has
        assert fn in (orders.connected, orders.tick), ("query from", fn)
        if self.queried is not None:
            age = self.now - self.queried[0]
            assert age >= self.s["settings"]["resendSeconds"] or age < 0, ("query again", age)
        ids = json.loads(a[3])["orderRequestIds"]
        for rid in self.s["orders"]:
            o = self.s["orders"][rid]
            e = [x for x in self.s["outbox"] if x[0] == schemas.ORDER and x[1] == rid]
            has = not schemas.is_final(o[0]) and (o[0] != "queued" or (e and e[0][4] == 1))
            assert (rid in ids) == bool(has), ("query list", rid, o, ids)
        assert len(ids) <= len(self.s["orders"])
        self.queried = (self.now, ids)

    def answer_query(self):
        # the service answers the last query: each listed order's status as it knows it,
        # sometimes the same as the device's (a duplicate), an older one (stale) or a newer one
        if not self.queried:
            return
        for rid in self.queried[1]:
            o = self.s["orders"].get(rid)
            st = self.rng.choice(schemas.STATUSES)
            if o is not None and o[0] != "queued" and self.rng.chance(50):
                st = o[0]
            before = orders.ignored(self.s).get("duplicate", 0)
            same = o is not None and o[0] == st
            oid = (o[1] or "O-1") if o is not None else "O-1"
            props = {"messageType": "orderStatus", "$.cid": rid, "$.ct": "application/json"}
            body = json.dumps({"orderRequestId": rid, "status": st, "orderId": oid}).encode()
            self.run(orders.c2d, props, body)
            if same:
                assert orders.ignored(self.s)["duplicate"] == before + 1
                assert self.s["orders"][rid][0] == st

    # events --------------------------------------------------------------------------------

    def press(self):
        rng = self.rng
        if rng.chance(5):
            bad = rng.choice(("", "xyz", rng.hex16().upper(), 7, None, rng.hex16()[:15]))
            if bad and type(bad) is str and schemas.is_id(bad):
                return
            before = persisted(self.s)
            try:
                orders.press(self.s, self.now, bad)
            except ValueError:
                assert persisted(self.s) == before
                return
            assert False, ("bad rid accepted", bad)
        rid = rng.hex16()
        if rid in self.s["orders"]:
            return
        had = set(self.s["orders"])
        self.allowed.add(rid)           # a press may order; check it really could:
        acts = self.run(orders.press, rid)
        if rid in self.s["orders"]:
            assert rid not in had and len(self.s["orders"]) >= 1
            cfg = self.s["settings"]
            assert cfg["sku"] and self.now >= schemas.CLOCK_SET_EPOCH
        else:
            self.allowed.discard(rid)
            assert not [a for a in acts if a[0] == "publish" and a[1] == rid]

    def status_message(self):
        rng = self.rng
        known = sorted(self.s["orders"]) + sorted(self.allowed)[:3]
        rid = rng.choice(known) if known and rng.chance(85) else rng.hex16()
        props = {"messageType": "orderStatus", "$.cid": rid, "$.ct": "application/json"}
        doc = {"orderRequestId": rid, "status": rng.choice(schemas.STATUSES),
               "orderId": rng.choice(("O-1", "O-2", "", "ORD-" + rid))}
        if rng.chance(30):
            doc["reason"] = rng.text(70)
        if rng.chance(10):
            doc["eta"] = rng.choice(("2026-12-01T10:00:00Z", 5, None))
        body = json.dumps(doc).encode()
        if rng.chance(15):
            body, props = self.hostile(body, props)
        self.run(orders.c2d, props, body)

    def hostile(self, body, props):
        rng = self.rng
        k = rng.below(6)
        if k == 0:
            return rng.raw(40), props
        if k == 1:
            return body[:rng.below(len(body) + 1)], props
        if k == 2:
            return b"".join(rng.choice(_JSON_BITS) for _ in range(rng.below(12))), props
        if k == 3:
            props = dict(props)
            props[rng.choice(("messageType", "$.cid", "$.ct"))] = rng.choice((None, "x", 5, ""))
            return body, props
        if k == 4:
            return body, rng.choice((None, [], "messageType=orderStatus", 3))
        return b'{"x":"' + b"y" * rng.below(900) + b'"}', props

    def twin(self):
        rng = self.rng
        keys = sorted(settings.DEFAULTS) + ["desired", "reported", "typo", "$version"]
        doc = {}
        for _ in range(rng.below(4)):
            k = rng.choice(keys)
            doc[k] = rng.choice((None, 0, 1, 2, 5, 60, 99, 100, 3600, -1, "SKU-%d" % rng.below(3),
                                 "", "bad sku!", "x" * 40, True, 1.5, {}, {"sku": "X"}, [1]))
        if rng.chance(60):              # what a configured cloud sends
            doc["sku"] = "SKU-1"
            doc["maxOpenOrders"] = rng.choice((1, 2, 3, MAX_OPEN))
        kind = rng.below(5)
        if kind == 0:                   # a full twin GET answer
            self.version += rng.below(2)
            doc["$version"] = self.version
            full = {"desired": doc, "reported": rng.choice(({}, {"x": 1}, orders.reported(self.s)))}
            self.run(orders.twin, full)
        elif kind in (1, 2):            # a patch with its topic's version
            self.version += 1
            v = self.version if rng.chance(90) else rng.below(self.version + 1)
            self.run(orders.twin, json.dumps(doc).encode(), v)
        elif kind == 3:                 # a patch that holds "desired" (issue 14, defect 1)
            self.version += 1
            before = dict(self.s["settings"])
            self.run(orders.twin, {"desired": doc, "reported": {"x": 1}}, self.version)
            assert self.s["settings"] == before, "a patch named desired reset the settings"
        else:
            self.run(orders.twin, rng.choice((rng.raw(30), b"[1]", b"null", None, 5, "{",
                                              b'{"desired": 5}')))

    def method(self):
        rng = self.rng
        name = rng.choice(("identify", "status", "cancel", "reboot", "other", ""))
        rids = sorted(self.s["orders"])
        payload = rng.choice((b"", b"{}", b"[]", b"{oops", b'{"seconds": 3}', b'{"seconds": 0}',
                              b'{"orderRequestId": "%s"}' % (rng.choice(rids) if rids
                                                               else rng.hex16()).encode(),
                              b'{"orderRequestId": 5}', rng.raw(20)))
        acts = self.run(orders.method, str(rng.below(100)), name, payload)
        resp = [a for a in acts if a[0] == "method_response"]
        assert len(resp) == 1, acts

    def reboot(self):
        # power cut: boot from the last blob, or a damaged copy of it
        rng = self.rng
        blob = self.blob
        damaged = bool(blob) and rng.chance(40)
        if damaged:
            blob = self.damage(blob)
            self.blob = blob            # what is on disk now, until restore saves over it
        kept = dict(self.s["orders"])
        self.s = orders.new("9.9.9")
        self.events += 1
        acts = well_formed(orders.restore(self.s, self.now, blob))
        if acts and acts[0][0] == "save":
            self.blob = acts[0][1]
            restores_the_same(self.blob, self.s)
        if not damaged:     # (a damaged id can look like another valid id: no check for that)
            assert sorted(self.s["orders"]) == sorted(kept) and not orders.ignored(self.s)
        self.rank = {}
        self.queried = None             # the rate limit lives in RAM: a reboot may ask at once
        for rid in self.s["orders"]:
            self.rank[rid] = schemas.STATUS_RULE[self.s["orders"][rid][0]][0]
        bounded(self.s, self.blob)

    def damage(self, blob):
        rng = self.rng
        k = rng.below(4)
        if k == 0:
            return blob[:rng.below(len(blob))]
        b = bytearray(blob)
        for _ in range(1 + rng.below(3)):
            i = rng.below(len(b))
            if k == 1:
                b[i] = rng.below(256)
            elif k == 2:
                b[i:i] = rng.choice(_JSON_BITS)
            else:
                j = min(len(b), i + rng.below(20))
                b[i:j] = b""
        return bytes(b)

    def step(self):
        rng = self.rng
        k = rng.below(100)
        if k < 20:
            self.press()
        elif k < 24:
            self.run(orders.long_press)
        elif k < 26:
            self.run(orders.double_press)
        elif k < 40:
            self.status_message()
        elif k < 44:
            self.answer_query()
        elif k < 52:
            if self.s["online"]:
                self.run(orders.disconnected, rng.choice((None, "auth", "timeout")))
            else:
                self.run(orders.connected)
        elif k < 60:
            out = self.s["outbox"]
            tag = schemas.mid(out[0][1], out[0][0]) if out and rng.chance(80) else rng.text(8)
            self.run(orders.published, tag)
        elif k < 70:
            self.twin()
        elif k < 76:
            self.method()
        elif k < 94:
            j = rng.below(20)
            self.now += rng.choice((1, 1, 5, 30, 61, 3600)) if j else \
                rng.choice((-1000, 10 ** 6, -(self.now - 1000)))
            self.run(orders.tick)
        else:
            self.reboot()


def run_case(seed, events):
    rng = Rng(seed)
    c = Case(rng)
    c.run(orders.restore, None)
    if rng.chance(80):
        c.version = 1
        c.run(orders.twin, {"sku": "SKU-1", "maxOpenOrders": rng.choice((1, 3, MAX_OPEN)),
                            "cancelWindowSeconds": 3600}, 1)
    for _ in range(events):
        c.step()
    return c.events


# --- the pure parsers --------------------------------------------------------------------

_PREFIXES = ("devices/d1/messages/devicebound", "devices/d1/messages/devicebound/",
             "$iothub/twin/res/", "$iothub/twin/PATCH/properties/desired/",
             "$iothub/methods/POST/", "$dps/registrations/res/", "", "devices/d2/")
_TOPIC_BITS = ("200", "x", "/", "?", "$rid=", "$version=", "&", "=", "%", "%2", "%zz", "%41",
               "name", "retry-after=", "-1", "99999999999999999999", "\u00e9", "$.cid=")


def parse_case(rng):
    # topic parsers: a value, None ("not mine") or TopicError, nothing else
    topic = rng.choice(_PREFIXES) + "".join(rng.choice(_TOPIC_BITS) for _ in range(rng.below(8)))
    for fn in (topics.parse_twin_response, topics.parse_desired_patch,
               topics.parse_method_request, dps.parse_dps_response):
        try:
            fn(topic)
        except topics.TopicError:
            pass
    try:
        got = topics.parse_c2d(topic, "d1")
        assert got is None or type(got) is dict
    except topics.TopicError:
        pass
    # a property bag survives encode -> decode
    bag = {}
    for _ in range(rng.below(4)):
        bag[rng.text(6) or "k"] = rng.choice((None, rng.text(8)))
    assert topics.decode_bag(topics.encode_bag(bag)) == bag, bag
    # schemas and settings: a reason or a value, never an exception
    body = b"".join(rng.choice(_JSON_BITS) for _ in range(rng.below(10)))
    got = schemas.parse_status(rng.choice((None, {}, {"messageType": "orderStatus"})), body)
    assert type(got) in (str, dict)
    doc = schemas.load(body)[0]
    acc, rej = settings.apply(settings.DEFAULTS, doc, rng.chance(50))
    for k in acc:
        assert settings.check(k, acc[k]) is None
    assert len(rej) <= 8


def main(cases, seed, events=30, quiet=False):
    # -> events run; AssertionError (with the seed to replay) on the first failing case
    total = 0
    for i in range(cases):
        case_seed = seed + i
        try:
            total += run_case(case_seed, events)
            parse_case(Rng(case_seed ^ 0x5bd1e995))
        except Exception as e:
            raise AssertionError("fuzz case failed: FUZZ_SEED=%d FUZZ_CASES=1 (%s: %s)"
                                 % (case_seed, type(e).__name__, e))
    if not quiet:
        print("fuzz: %d cases from seed %d, %d events" % (cases, seed, total))
    return total


if __name__ == "__main__":
    import sys
    argv = sys.argv[1:]
    main(int(argv[0]) if argv else 10000, int(argv[1]) if len(argv) > 1 else 1)
