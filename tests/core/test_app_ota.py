# Over-the-air update decisions (firmware/app/ota.py). Runs under pytest and the unix MicroPython.
from firmware.app import ota, settings

SHA = "ab" * 32
GOOD = {"version": "1.1", "url": "https://h:1/releases/firmware/1.1/manifest.json", "sha256": SHA, "size": 300}


def _manifest(**kw):
    m = {"version": "1.1", "kind": "firmware", "base": None, "minFree": 10, "bundle": "bundle.bin",
         "files": [{"path": "firmware/app/orders.mpy", "size": 100, "sha256": SHA},
                   {"path": "firmware/runtime/device.mpy", "size": 50, "sha256": SHA}]}
    m.update(kw)
    return m


def test_versions_compare_as_numbers():
    assert ota.newer("1.1", "1.0.0") and ota.newer("1.10", "1.9") and ota.newer("2", "1.99.99")
    assert not ota.newer("1.0", "1.0.0") and not ota.newer("1.0.0", "1.1")
    for bad in ("", "1..2", "v1", "1.2.3.4.5", None, 11, "1.-2", "1" * 17):
        assert ota.parse_version(bad) is None, bad
        assert not ota.newer(bad, "1.0") and not ota.newer("1.0", bad)


def test_desired_value_is_checked():
    assert ota.desired(None) == (None, None)
    assert ota.desired(GOOD) == (GOOD, None)
    assert ota.desired(dict(GOOD, url="http://h/m.json")) == (None, "not https")
    for bad in ("x", [1], dict(GOOD, sha256="00"), dict(GOOD, size=0), dict(GOOD, size=10 ** 6),
                dict(GOOD, version="latest"), dict(GOOD, url=None), {"version": "1.1"}):
        assert ota.desired(bad) == (None, "bad desired"), bad


def test_manifest_checks():
    files, total, need = ota.check_manifest(_manifest(), GOOD, "firmware", "1.0.0")
    assert files[0] == ("firmware/app/orders.mpy", 100, SHA) and total == 150 and need == 150
    assert ota.check_manifest(_manifest(minFree=1000), GOOD, "firmware", "1.0.0")[2] == 1000
    assert ota.check_manifest(_manifest(version="1.2"), GOOD, "firmware", "1.0.0") == "other version"
    assert ota.check_manifest(_manifest(base="0.9"), GOOD, "firmware", "1.0.0") == "other base"
    assert ota.check_manifest(_manifest(base="1.0.0"), GOOD, "firmware", "1.0.0")[1] == 150
    assert ota.check_manifest(_manifest(), GOOD, "trustStore", "1") == "bad manifest"
    for path in ("../boot.py", "/firmware/x.mpy", "main.py", "firmware/../x", "firmware/a b.mpy"):
        m = _manifest(files=[{"path": path, "size": 1, "sha256": SHA}])
        assert ota.check_manifest(m, GOOD, "firmware", "1.0.0") == "bad manifest", path
    twice = _manifest(files=[{"path": "firmware/a.mpy", "size": 1, "sha256": SHA}] * 2)
    for m in ([], {"files": "x"}, _manifest(files=[]), _manifest(minFree=-1), twice,
              _manifest(files=[{"path": "firmware/a.mpy", "size": -1, "sha256": SHA}])):
        assert ota.check_manifest(m, GOOD, "firmware", "1.0.0") == "bad manifest", m
    ca = {"version": "2", "kind": "trustStore", "files": [{"path": "ca.der", "size": 900, "sha256": SHA}]}
    assert ota.check_manifest(ca, dict(GOOD, version="2"), "trustStore", None)[1] == 900


def test_files_sit_next_to_the_manifest_with_its_query():
    assert ota.sibling_url("https://h/r/1.1/manifest.json", "bundle.bin") == "https://h/r/1.1/bundle.bin"
    assert ota.sibling_url("https://a.blob/c/1.1/manifest.json?sv=1&sig=x", "bundle.bin") == \
        "https://a.blob/c/1.1/bundle.bin?sv=1&sig=x"


def test_retry_backs_off_to_an_hour():
    waits = [ota.retry_in(a, 0.5) for a in range(12)]
    assert waits[0] >= 15 and all(a <= b for a, b in zip(waits, waits[1:])) and waits[-1] <= 3600


def test_the_update_keys_are_not_settings():
    acc, rej = settings.apply(settings.DEFAULTS, {"firmware": GOOD, "trustStore": None, "quantity": 2})
    assert acc == {"quantity": 2} and rej == {}
