# DPS answers as the device reads them (firmware/iothub/dps.py), on both interpreters.
import json

from firmware.iothub import dps


def _body(**kw):
    return json.dumps(kw).encode()


def test_register_body_names_the_registration():
    assert json.loads(dps.register_body("button-7")) == {"registrationId": "button-7"}


def test_202_waits_for_retry_after_then_200_assigns():
    assert dps.answer(202, 3, _body(operationId="4.a.b", status="assigning")) == ("wait", "4.a.b", 3)
    ok = _body(operationId="4.a.b", status="assigned",
               registrationState={"assignedHub": "h.azure-devices.net", "deviceId": "d1"})
    assert dps.answer(200, None, ok) == ("assigned", "h.azure-devices.net", "d1")


def test_retry_after_is_honoured_but_bounded():
    b = _body(operationId="op", status="assigning")
    assert dps.answer(202, None, b) == ("wait", "op", dps.DEFAULT_POLL_S)
    assert dps.answer(202, 0, b) == ("wait", "op", dps.DEFAULT_POLL_S)
    assert dps.answer(200, 100000, b) == ("wait", "op", dps.MAX_POLL_S)


def test_refusals():
    assert dps.answer(200, None, _body(operationId="op", status="disabled")) == ("refused", "disabled")
    assert dps.answer(200, None, _body(operationId="op", status="failed")) == ("refused", "failed")
    assert dps.answer(401, None, _body(errorCode=401002, message="Unauthorized")) == ("refused", "unauthorized")
    assert dps.answer(400, None, b"") == ("refused", "status 400")


def test_busy_or_broken_answers_are_retried_never_raised():
    assert dps.answer(429, 5, b"") == ("retry", 5)
    assert dps.answer(503, None, b"{") == ("retry", None)
    for body in (b"", b"not json", b"[1]", _body(status="assigned"),
                 _body(status="assigned", registrationState={"assignedHub": 5, "deviceId": "d"}),
                 _body(status="weird")):
        assert dps.answer(200, None, body)[0] == "retry", body


def test_a_throttled_device_waits_at_least_retry_after_bounded_and_spread():
    assert dps.retry_s(None, 0.5) is None and dps.retry_s(0, 0.5) is None
    assert dps.retry_s(3, 0) == 3 and dps.retry_s(3, 0.999) < 3.75
    assert dps.retry_s(10 ** 6, 0) == dps.MAX_RETRY_S                    # never hangs
    assert dps.MAX_RETRY_S <= dps.retry_s(10 ** 6, 0.999) < dps.MAX_RETRY_S * 1.25
