"""`python -m host_tools orders ...` in-process: errors are one line and exit 2; the offline
commands (list, show, advance, cancel, profile) work on the database alone."""
import fcntl
import json
import os

import pytest

from host_tools.__main__ import main
from host_tools.cloud.orders import catalogue, timeline
from host_tools.cloud.orders.service import OrderService
from host_tools.cloud.orders.store import Store
from tests.cloud.orders.conftest import order_event, set_profile


def run(capsys, *argv):
    code = main(["orders", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err):
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def data(tmp_path):
    return str(tmp_path / "orders")


def test_profile_set_and_show_mask_the_token(capsys, data):
    code, out, _ = run(capsys, "profile", "set", "button-1", "--name", "Ada", "--address",
                       "1 Main St", "--shipping-method", "express", "--payment-token",
                       "tok_visa_4242", "--data", data)
    assert code == 0 and "tok_visa" not in out
    code, out, _ = run(capsys, "profile", "show", "button-1", "--data", data)
    assert code == 0 and json.loads(out) == {"deviceId": "button-1", "name": "Ada",
                                             "address": "1 Main St", "shippingMethod": "express",
                                             "paymentToken": "****4242"}


def test_profile_payment_token_from_stdin(capsys, data, monkeypatch):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("tok_visa_9876\n"))
    code, out, _ = run(capsys, "profile", "set", "button-1", "--name", "Ada", "--address",
                       "1 Main St", "--shipping-method", "standard", "--payment-token", "-",
                       "--data", data)
    assert code == 0 and "tok_visa" not in out
    store = Store(data)
    assert store.profile("button-1")["payment_token"] == "tok_visa_9876"
    store.close()


@pytest.mark.parametrize("argv,words", [
    (["profile", "set", "b", "--name", "A", "--address", "X", "--shipping-method", "drone",
      "--payment-token", "t"], "unknown shipping method 'drone'"),
    (["profile", "set", "b", "--name", "A", "--address", " ", "--shipping-method", "standard",
      "--payment-token", "t"], "address must not be empty"),
    (["profile", "show", "nobody"], "no order data in"),
    (["list"], "no order data in"),
    (["show", "ORD-1"], "no order data in"),
    (["serve", "--timeline", "shipped=1"], "in order without gaps"),
    (["serve", "--timeline", "payment_authorized=soon"], "not a number"),
    (["serve", "--c2d-ttl", "0"], "--c2d-ttl must be 1-172800 seconds"),
    (["serve", "--c2d-ttl", "172801"], "--c2d-ttl must be 1-172800 seconds"),
])
def test_user_errors_are_one_clear_line(capsys, data, argv, words):
    code, out, err = run(capsys, *argv, "--data", data)
    assert code == 2 and words in one_line_error(err)


def test_broken_catalogue_is_one_clear_line(capsys, data, tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"currency": "EUR", "products": {"X": {"name": "x", "unitPrice": 1.5}}}')
    code, _, err = run(capsys, "serve", "--catalogue", str(bad), "--data", data)
    assert code == 2 and "unitPrice" in one_line_error(err) and "--catalogue" in err


def test_second_serve_on_one_folder_is_refused(capsys, data, tmp_path):
    os.makedirs(data)
    with open(os.path.join(data, "serve.lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running serve holds it
        code, _, err = run(capsys, "serve", "--hub-data", str(tmp_path / "hub"), "--data", data)
    assert code == 2 and "already running" in one_line_error(err)


def test_list_show_advance_cancel_offline(capsys, data):
    store = Store(data)
    with store.transaction():
        store.set_timeline_config({"payment_authorized": 2})  # what `serve` last ran with
    set_profile(store, "button-1")
    svc = OrderService(store, catalogue.load(), timeline.parse("manual"), clock=lambda: 1e9)
    svc.handle_events([order_event(1, "aaaaaaaaaaaaaaaa", device="button-1", quantity=2),
                       order_event(2, "bbbbbbbbbbbbbbbb", device="button-1", sku="NOPE")], {"0": 3})
    store.close()

    code, out, _ = run(capsys, "list", "--data", data)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ORDER", "REQUEST", "DEVICE", "STATUS", "TOTAL",
                                              "UPDATED", "NEXT"]
    assert lines[1].split()[:4] == ["-", "bbbbbbbbbbbbbbbb", "button-1", "failed"]
    assert lines[2].split()[:5] == ["ORD-000001", "aaaaaaaaaaaaaaaa", "button-1", "accepted",
                                    "42.75"]  # 2 x 18.90 + 4.95

    code, out, _ = run(capsys, "show", "bbbbbbbbbbbbbbbb", "--data", data)
    shown = json.loads(out)
    assert code == 0 and shown["reason"] == "unknown sku NOPE" and "order" not in shown

    code, out, _ = run(capsys, "advance", "ORD-000001", "--data", data)
    moved = json.loads(out)
    assert moved["status"] == "payment_authorized"
    assert "next" not in moved  # the stored timeline stops at payment_authorized
    code, out, _ = run(capsys, "cancel", "aaaaaaaaaaaaaaaa", "--data", data)
    assert code == 0 and json.loads(out)["status"] == "cancelled"
    code, _, err = run(capsys, "advance", "ORD-000001", "--data", data)
    assert code == 2 and "cannot advance an order that is cancelled" in one_line_error(err)
    code, _, err = run(capsys, "cancel", "bbbbbbbbbbbbbbbb", "--data", data)
    assert code == 2 and "already failed" in one_line_error(err)

    store = Store(data)
    queued = [json.loads(m["body"])["status"] for m in store.pending()]
    assert queued == ["accepted", "failed", "payment_authorized", "cancelled"]  # for serve
    store.close()
