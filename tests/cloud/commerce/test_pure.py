"""The pure parts: the commerce lifecycle, the schedule spec, Event Grid helpers, tokens."""
import pytest

from host_tools.cloud.commerce import eventgrid, lifecycle, schedule, tokens


def test_happy_path_and_decline_at_authorisation():
    assert lifecycle.advance("created", "tok_visa") == ("payment_authorized", None)
    assert lifecycle.advance("created", "tok_declined_x") == ("payment_declined",
                                                              "payment declined")
    assert lifecycle.advance("payment_authorized", "tok_declined_x") == ("shipped", None)
    assert lifecycle.advance("shipped", "t") == ("delivered", None)
    for status in ("delivered", "cancelled", "payment_declined"):
        with pytest.raises(lifecycle.IllegalTransition):
            lifecycle.advance(status, "t")


def test_cancellable_only_before_shipment():
    assert [s for s in lifecycle.STATUSES if lifecycle.can_cancel(s)] == \
        ["created", "payment_authorized"]


def test_path_to():
    assert lifecycle.path_to("created", "delivered") == ["payment_authorized", "shipped",
                                                         "delivered"]
    for args in (("shipped", "shipped"), ("shipped", "created"), ("cancelled", "delivered"),
                 ("created", "cancelled")):
        with pytest.raises(lifecycle.IllegalTransition):
            lifecycle.path_to(*args)


def test_every_status_has_an_event_type_and_back():
    assert set(lifecycle.EVENT_TYPES) == set(lifecycle.STATUSES)
    assert all(lifecycle.STATUS_OF_EVENT[t] == s for s, t in lifecycle.EVENT_TYPES.items())


def test_schedule_specs():
    s = schedule.parse(None)
    assert s.as_dict() == {"payment_authorized": 2, "shipped": 4, "delivered": 6}
    assert s.next_step("created", 100) == ("payment_authorized", 102)
    assert s.next_step("delivered", 100) == (None, None) and s.eta(100) == 106
    prefix = schedule.parse("payment_authorized=1.5")
    assert prefix.next_step("created", 0) == ("payment_authorized", 1.5)
    assert prefix.next_step("payment_authorized", 0) == (None, None) and prefix.eta(0) is None
    assert schedule.parse("manual").as_dict() == {}
    for bad in ("shipped=1", "payment_authorized=3,shipped=1", "payment_authorized=x",
                "created=0", "payment_authorized=-1", "nonsense"):
        with pytest.raises(schedule.ScheduleError):
            schedule.parse(bad)


def test_schedule_from_a_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"payment_authorized": 1, "shipped": 2}')
    assert schedule.parse(str(path)).as_dict() == {"payment_authorized": 1, "shipped": 2}
    path.write_text("{")
    with pytest.raises(schedule.ScheduleError):
        schedule.parse(str(path))


def test_delivery_outcomes_and_backoff():
    assert [eventgrid.outcome(s) for s in (200, 202, 204)] == ["delivered"] * 3
    assert [eventgrid.outcome(s) for s in (400, 401, 403, 413)] == ["dead"] * 4
    assert [eventgrid.outcome(s) for s in (None, 404, 408, 429, 500, 503)] == ["retry"] * 6
    assert [eventgrid.retry_delay(n, 1, 10) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert eventgrid.iso(0) == "1970-01-01T00:00:00.000Z"


def test_secrets_are_stored_salted_and_compared_in_constant_time():
    salt, digest = tokens.hash_secret("a-secret")
    assert "a-secret" not in digest and tokens.secret_matches("a-secret", salt, digest)
    assert not tokens.secret_matches("b-secret", salt, digest)
    assert tokens.hash_secret("a-secret")[1] != digest   # a new salt each time


def test_signing_key_is_0600_and_stable(tmp_path):
    import os
    import stat
    key = tokens.load_or_create_key(str(tmp_path))
    assert stat.S_IMODE(os.stat(tmp_path / tokens.KEY_FILE).st_mode) == 0o600
    again = tokens.load_or_create_key(str(tmp_path))
    assert tokens.public_jwk(key.public_key()) == tokens.public_jwk(again.public_key())


def test_issued_token_verifies_and_expires_by_the_given_clock(tmp_path):
    issuer = tokens.Issuer(tokens.load_or_create_key(str(tmp_path)), "https://x", lifetime=60)
    token = issuer.issue("shop", 1000)["access_token"]
    assert issuer.verify(token, 1059)["sub"] == "shop"
    with pytest.raises(tokens.InvalidToken, match="expired"):
        issuer.verify(token, 1060)
    with pytest.raises(tokens.InvalidToken, match="not yet valid"):
        issuer.verify(token, 999)
    other = tokens.Issuer(tokens.load_or_create_key(str(tmp_path / "o")), "https://x")
    with pytest.raises(tokens.InvalidToken):
        other.verify(token, 1000)
