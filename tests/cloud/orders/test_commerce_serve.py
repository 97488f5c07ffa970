"""`orders serve --commerce-url ...` as a real process: kill -9 between every pair of commerce
calls never makes a second order, and the configuration errors are one line."""
import os
import signal
import time

import pytest
from aiohttp import web

from host_tools.files import write_atomic
from tests.cloud.commerce.conftest import SECRET, Backend, CLIENT_ID, cert_paths  # noqa: F401
from tests.cloud.orders.conftest import FakeClock
from tests.cloud.hub.conftest import hub  # noqa: F401
from tests.cloud.orders.test_with_hub import DEADLINE, Serve, _cli, device  # noqa: F401


class Killer:
    """Kills the orchestrator with SIGKILL right after the commerce API answered one call:
    the call is done on the commerce side, its answer never recorded by the orchestrator."""

    def __init__(self):
        self.pid, self.method, self.path_part = None, None, None
        self.calls = []

    @web.middleware
    async def middleware(self, request, handler):
        response = await handler(request)
        self.calls.append((request.method, request.path))
        if self.pid and request.method == self.method and self.path_part in request.path:
            os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        return response


@pytest.fixture
def commerce(tmp_path, cert_paths):  # noqa: F811
    killer = Killer()
    b = Backend(tmp_path / "commerce", cert_paths, FakeClock(time.time()))
    b.start("manual", middlewares=(killer.middleware,))
    b.killer = killer
    yield b
    b.stop()


def commerce_args(backend, tmp_path, cert_paths):  # noqa: F811
    secret_file = str(tmp_path / "commerce.secret")
    write_atomic(secret_file, SECRET + "\n", mode=0o600)
    return ["--commerce-url", backend.url + "/api", "--client-id", CLIENT_ID,
            "--client-secret-file", secret_file, "--commerce-ca", cert_paths["ca.pem"],
            "--webhook-certs", os.path.dirname(cert_paths["ca.pem"])]


STEPS = [("PUT", "/api/carts/button-1:", "cart"), ("PUT", "/lines/", "line"),
         ("PUT", "/fulfillment", "fulfillment"), ("PUT", "/payment", "payment"),
         ("POST", "/api/orders", "order")]


@pytest.mark.parametrize("method,path_part,after", STEPS, ids=[s[2] for s in STEPS])
def test_kill_9_after_any_commerce_call_never_orders_twice(hub, device, commerce, tmp_path,  # noqa: F811
                                                           cert_paths, method, path_part, after):  # noqa: F811
    data = str(tmp_path / "orders")
    _cli("profile", "set", "button-1", "--name", "Ada", "--address", "1 Main St",
         "--shipping-method", "standard", "--payment-token", "tok_visa_4242", "--data", data)
    args = commerce_args(commerce, tmp_path, cert_paths)
    serve = Serve(hub, data, *args)
    assert serve.ready["subscribed"] is True
    commerce.killer.method, commerce.killer.path_part = method, path_part
    commerce.killer.pid = serve.proc.pid
    dev = device("button-1")
    dev.order("cccc000000000001")
    assert serve.proc.wait(DEADLINE) == -signal.SIGKILL
    assert dev.statuses() == []
    serve = Serve(hub, data, *args)
    try:
        dev.wait_statuses("cccc000000000001", ["accepted"])
    finally:
        assert serve.stop() == 0
    store = commerce.store()
    try:
        assert len(store.orders()) == 1
        assert store.db.execute("SELECT COUNT(*) FROM carts").fetchone()[0] == 1
        assert store.db.execute("SELECT COUNT(*) FROM cart_lines").fetchone()[0] == 1
    finally:
        store.close()
    assert dev.statuses() == ["accepted"]
    chain = [(m, p) for m, p in commerce.killer.calls if p.startswith("/api/carts") or
             p == "/api/orders"]
    assert len(chain) >= 6     # the chain ran again after the crash


def test_serve_with_commerce_runs_the_commerce_timeline(hub, device, tmp_path, cert_paths):  # noqa: F811
    b = Backend(tmp_path / "commerce", cert_paths, __import__("time").time)
    b.start("payment_authorized=0.1,shipped=0.2,delivered=0.3", poll=0.02, retry_base=0.05)
    try:
        data = str(tmp_path / "orders")
        _cli("profile", "set", "button-1", "--name", "Ada", "--address", "1 Main St",
             "--shipping-method", "express", "--payment-token", "tok_visa_4242", "--data", data)
        serve = Serve(hub, data, *commerce_args(b, tmp_path, cert_paths))
        try:
            assert serve.ready["timeline"] is None and serve.ready["webhook"].startswith("https")
            assert "code=" not in serve.ready["webhook"]
            dev = device("button-1")
            dev.order("7777777777777777", sku="TOWELS-8", quantity=3)
            dev.wait_statuses("7777777777777777",
                              ["accepted", "payment_authorized", "shipped", "delivered"])
        finally:
            assert serve.stop() == 0
        import json
        shown = json.loads(_cli("show", "7777777777777777", "--data", data).stdout)
        assert [h["status"] for h in shown["history"]] == [
            "accepted", "payment_authorized", "shipped", "delivered"]
        assert shown["order"]["totals"]["grandTotal"] == "32.42"
        assert "tok_visa" not in json.dumps(shown)
        for command in ("advance", "cancel"):   # the commerce system runs its statuses
            refused = _cli(command, "7777777777777777", "--data", data, check=False)
            assert refused.returncode == 2 and refused.stderr.count("\n") == 1
            assert "use `python -m host_tools commerce advance|cancel ORD-000001`" in \
                refused.stderr
    finally:
        b.stop()


@pytest.mark.parametrize("extra,words", [
    (["--commerce-url", "http://127.0.0.1:1/api", "--client-id", "x", "--client-secret-file",
      "S"], "--commerce-url must be an https:// URL"),
    (["--commerce-url", "https://127.0.0.1:1/api"], "needs --client-id and --client-secret-file"),
    (["--client-id", "x"], "--client-id needs --commerce-url"),
    (["--commerce-url", "https://127.0.0.1:1/api", "--client-id", "x", "--client-secret-file",
      "OPEN"], "must be readable by its owner only"),
    (["--commerce-url", "https://127.0.0.1:1/api", "--client-id", "x", "--client-secret-file",
      "MISSING"], "cannot read the client secret file"),
])
def test_commerce_configuration_errors_are_one_line(tmp_path, extra, words):
    open_file = tmp_path / "open.secret"
    open_file.write_text("secret-secret-secret\n")
    os.chmod(open_file, 0o644)
    write_atomic(str(tmp_path / "ok.secret"), "secret-secret-secret\n", mode=0o600)
    names = {"S": str(tmp_path / "ok.secret"), "OPEN": str(open_file),
             "MISSING": str(tmp_path / "missing")}
    extra = [names.get(a, a) for a in extra]
    proc = _cli("serve", "--hub-data", str(tmp_path / "nohub"), "--data", str(tmp_path / "o"),
                *extra, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and words in proc.stderr, \
        proc.stderr


def test_client_secret_from_standard_input(monkeypatch):
    import io
    from host_tools.cloud.orders.cli import _read_secret_file
    monkeypatch.setattr("sys.stdin", io.StringIO("the-secret-from-stdin\n"))
    assert _read_secret_file("-") == "the-secret-from-stdin"
