# Twin desired settings (firmware/app/settings.py).
from firmware.app import orders, settings

D = settings.DEFAULTS

CHECKS = [
    # (key, value, valid)
    ("sku", "SKU-1", True), ("sku", "", True), ("sku", "a.b_c-9", True), ("sku", "x" * 32, True),
    ("sku", "x" * 33, False), ("sku", "has space", False), ("sku", "caf\u00e9", False),
    ("sku", 12, False), ("sku", None, False), ("sku", ["SKU"], False),
    ("quantity", 1, True), ("quantity", 99, True), ("quantity", 0, False), ("quantity", 100, False),
    ("quantity", -1, False), ("quantity", 2.0, False), ("quantity", "2", False),
    ("quantity", True, False), ("quantity", 10 ** 30, False),
    ("maxOpenOrders", 1, True), ("maxOpenOrders", 10, True), ("maxOpenOrders", 11, False),
    ("maxOpenOrders", 0, False),
    ("cancelWindowSeconds", 0, True), ("cancelWindowSeconds", 3600, True),
    ("cancelWindowSeconds", 3601, False), ("cancelWindowSeconds", False, False),
    ("displayBrightness", 0, True), ("displayBrightness", 255, True),
    ("displayBrightness", 256, False),
    ("resendSeconds", 10, True), ("resendSeconds", 9, False),
]


def test_check_table():
    for key, value, ok in CHECKS:
        why = settings.check(key, value)
        assert (why is None) is ok, (key, value, why)
        assert why is None or (type(why) is str and 0 < len(why) <= 24), why


def test_defaults_are_valid():
    for k in D:
        assert settings.check(k, D[k]) is None, k
    assert D["maxOpenOrders"] == 1 and D["cancelWindowSeconds"] == 60 and D["sku"] == ""


PATCHES = [
    # (patch, accepted, rejected keys)
    ({"quantity": 3, "$version": 4}, {"quantity": 3}, []),
    ({"sku": "A", "quantity": 0}, {"sku": "A"}, ["quantity"]),
    ({"quantity": None}, {"quantity": 1}, []),                  # null: back to the default
    ({"sku": None}, {"sku": ""}, []),
    ({"colour": "red"}, {}, ["colour"]),
    ({"colour": None}, {}, []),          # null deletes a typo from the twin: not a rejection
    ({"maxOpenOrders": 2, "cancelWindowSeconds": "60"}, {"maxOpenOrders": 2},
     ["cancelWindowSeconds"]),
    ({}, {}, []),
    ({"$version": 9, "$metadata": {}}, {}, []),
]


def test_apply_patch_table():
    cfg = dict(D)
    for patch, acc, rej in PATCHES:
        a, r = settings.apply(cfg, patch)
        assert a == acc, (patch, a)
        assert sorted(r) == sorted(rej), (patch, r)
        assert cfg == D   # apply never changes cfg


def test_apply_hostile_documents():
    for doc in (None, [], "sku", 5, b"{}"):
        assert settings.apply(D, doc) == ({}, {"desired": "not an object"})
    many = {}
    for i in range(100):
        many["k%d" % i] = i
    many["x" * 200] = 1
    a, r = settings.apply(D, many)
    assert a == {} and _size(r) <= settings.MAX_REJECTED_BYTES + 40, len(r)
    assert len(r) - 1 + int(r["_more"].split()[0]) == 101    # each one listed or counted
    for k in r:
        assert len(k) <= 32


MERGES = [
    # (old rejected, desired, accepted, new rejected, expected rejected map)
    ({"colour": "unknown setting"}, {"colour": None}, {}, {}, {}),
    ({"x" * 32: "unknown setting"}, {"x" * 40: None}, {}, {}, {}),   # stored cut to 32
    ({"quantity": "int 1..99"}, {"quantity": 5}, {"quantity": 5}, {}, {}),
    ({"quantity": "int 1..99"}, {"sku": "A"}, {"sku": "A"}, {}, {"quantity": "int 1..99"}),
    ({"a": "r"}, {"b": 1}, {}, {"b": "unknown setting"}, {"a": "r", "b": "unknown setting"}),
    ({"a": "old"}, {"a": 1}, {}, {"a": "new"}, {"a": "new"}),
    ({"a": "r"}, [], {}, {"desired": "not an object"}, {"a": "r", "desired": "not an object"}),
]


def test_rejected_merge_table():
    for old, desired, acc, rej, want in MERGES:
        got = settings.rejected(old, desired, acc, rej)
        assert got == want, (old, desired, got)


def _size(rej):
    return sum(len(k) + len(v) + 6 for k, v in rej.items())


def test_rejected_is_bounded_by_size_not_count():
    # every rejected setting is listed while the map fits its size budget (issue 10: it used to
    # keep 8 and drop the rest silently); beyond that, "_more" says how many are left out
    rej = {}
    for p in range(5):
        patch = {}
        for i in range(10):
            patch["typo%d_%d" % (p, i)] = i
        a, r = settings.apply(D, patch)
        rej = settings.rejected(rej, patch, a, r)
        assert len(rej) == 10 * (p + 1), (p, len(rej))
    new = settings.rejected(rej, {"late": 1}, {}, {"late": "unknown setting"})
    assert "late" in new and len(new) == 51


def test_rejected_over_the_budget_counts_the_rest():
    patch = {}
    for i in range(200):
        patch["k%03d_%s" % (i, "x" * 24)] = i
    a, r = settings.apply(D, patch)
    assert _size(r) <= settings.MAX_REJECTED_BYTES + 40
    listed = len(r) - 1
    assert r["_more"] == "%d more not listed" % (200 - listed) and listed > 20
    rej = settings.rejected({}, patch, a, r)
    assert rej == r
    # a later patch keeps the count of those left out and lists its own first
    rej2 = settings.rejected(rej, {"new": 1}, {}, {"new": "unknown setting"})
    assert "new" in rej2 and int(rej2["_more"].split()[0]) >= 200 - listed
    assert _size(rej2) <= settings.MAX_REJECTED_BYTES + 40


def test_full_document_resets_missing_keys():
    a, r = settings.apply({"sku": "A", "quantity": 5}, {"sku": "B", "$version": 2}, True)
    assert r == {}
    assert a == dict(D, sku="B"), a


def test_diff():
    assert orders.diff({}, {"a": 1}) == {"a": 1}
    assert orders.diff({"a": 1}, {"a": 1}) == {}
    assert orders.diff({"a": 1}, {}) == {"a": None}
    assert orders.diff({"a": 1}, {"a": True}) == {"a": True}
    assert orders.diff({"r": {"x": "bad", "y": "bad"}}, {"r": {"y": "bad"}}) == {"r": {"x": None}}
    assert orders.diff({"r": {}}, {"r": {"z": 1}}) == {"r": {"z": 1}}
    assert orders.diff({"r": "old"}, {"r": {"z": 1}}) == {"r": {"z": 1}}
    assert orders.diff({"a": None}, {"a": None}) == {}
