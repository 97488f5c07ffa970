"""`python -m host_tools sas` and `derive-key`, run as a user would run them."""
import subprocess
import sys
import time

from host_tools.cloud import tokens
from tests.core.test_sas import DERIVED, KEY, TOKENS


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "host_tools", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_sas_with_expiry_prints_the_golden_token():
    uri, key, expiry, _, expected = TOKENS[0]
    host, device = uri.split("/devices/")
    r = run("sas", "--host", host, "--device", device, "--key", key, "--expiry", str(expiry))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected


def test_sas_with_policy_and_key_from_stdin():
    uri, key, expiry, policy, expected = TOKENS[1]
    host, device = uri.split("/devices/")
    r = run("sas", "--host", host, "--device", device, "--key", "-", "--expiry", str(expiry),
            "--policy", policy, stdin=key + "\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected


def test_sas_with_ttl_expires_that_many_seconds_from_now():
    before = int(time.time())
    r = run("sas", "--host", "h", "--device", "d", "--key", KEY, "--ttl", "600")
    assert r.returncode == 0, r.stderr
    t = tokens.check(r.stdout.strip(), KEY, before, "h/devices/d")
    assert before + 600 <= t["se"] <= int(time.time()) + 600


def test_hub_wide_service_token():
    r = run("sas", "--host", "h", "--key", KEY, "--expiry", "2000000000", "--policy", "iothubowner")
    assert r.returncode == 0, r.stderr
    assert tokens.parse(r.stdout.strip())["sr"] == "h"


def test_bad_key_is_one_clear_line_without_the_key():
    r = run("sas", "--host", "h", "--device", "d", "--key", "not*base64", "--ttl", "60")
    assert r.returncode == 2
    assert r.stderr.startswith("error: key is not valid base64")
    assert "not*base64" not in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_device_without_policy_is_refused():
    r = run("sas", "--host", "h", "--key", KEY, "--ttl", "60")
    assert r.returncode == 2 and "--device is required" in r.stderr


def test_derive_key():
    group, reg, expected = DERIVED[0]
    r = run("derive-key", "--group-key", group, "--registration-id", reg)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected
    r = run("derive-key", "--group-key", "%%%", "--registration-id", reg)
    assert r.returncode == 2 and "group key is not valid base64" in r.stderr


def test_key_from_empty_stdin_says_so():
    r = run("sas", "--host", "h", "--device", "d", "--key", "-", "--ttl", "60", stdin="")
    assert r.returncode == 2 and r.stderr.strip() == "error: no key on standard input"
