"""`python -m host_tools commerce ...`: serve as a real process (ready line, kill -9 loses
nothing), client registration, and the offline commands; errors are one line, exit 2."""
import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from host_tools import processes
from host_tools.__main__ import main
from host_tools.cloud.commerce.client import Client, Unavailable
from tests.cloud.commerce.conftest import fill_cart
from tests.cloud.commerce.webhook_peer import WebhookPeer


def run(capsys, *argv):
    code = main(["commerce", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def serve(tmp_path, cert_paths):
    """serve(*extra) -> (process, ready info, client); every process is stopped at the end."""
    started = []
    data = str(tmp_path / "commerce")
    secret_file = str(tmp_path / "secret")

    def start(*extra):
        if not os.path.exists(secret_file):
            assert main(["commerce", "client", "add", "orders", "--data", data,
                         "--secret-file", secret_file]) == 0
        proc, info = processes.start(
            ["commerce", "serve", "--data", data, "--port", "0",
             "--certs", os.path.dirname(cert_paths["ca.pem"]), *extra],
            str(tmp_path / "serve.log"), name="commerce serve")
        started.append(proc)
        with open(secret_file) as f:
            client = Client(info["apiUrl"], info["tokenUrl"], "orders", f.read().strip(),
                            ca=info["ca"])
        return proc, info, client

    start.data = data
    yield start
    for proc in started:
        processes.stop(proc)


def test_client_add_writes_the_secret_0600_and_prints_it_only_when_asked(capsys, tmp_path):
    data, secret_file = str(tmp_path / "c"), str(tmp_path / "secret")
    code, out, _ = run(capsys, "client", "add", "shop", "--data", data,
                       "--secret-file", secret_file)
    assert code == 0 and json.loads(out) == {"clientId": "shop",
                                             "secretFile": os.path.abspath(secret_file)}
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(data, "commerce.sqlite3")).st_mode) == 0o600
    with open(secret_file) as f:
        assert len(f.read().strip()) >= 40
    code, out, _ = run(capsys, "client", "add", "shop2", "--data", data)
    assert code == 0 and len(json.loads(out)["clientSecret"]) >= 40


@pytest.mark.parametrize("argv,words", [
    (["client", "add", "shop", "--secret", "on-the-command-line"], "--secret takes only '-'"),
    (["client", "add", "bad id!"], "client id must be"),
    (["show", "ORD-000001"], "no commerce data in"),
    (["serve", "--timeline", "shipped=1"], "statuses must be given in order"),
    (["serve", "--token-lifetime", "0"], "--token-lifetime must be > 0"),
])
def test_errors_are_one_line(capsys, tmp_path, argv, words):
    code, _, err = run(capsys, *argv, "--data", str(tmp_path / "c"))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err


def test_serve_announces_readiness_and_runs_the_whole_flow(serve):
    proc, info, client = serve("--timeline", "manual")
    assert info["ready"] is True and info["service"] == "commerce" and info["pid"] == proc.pid
    assert info["timeline"] == {}
    fill_cart(client)
    order = client.create_order("cart-1", "k1")
    assert order["status"] == "created"
    client.advance(order["id"], to="delivered")
    assert client.get_order(order["id"])["status"] == "delivered"


def test_a_second_serve_on_the_same_data_is_refused(serve, tmp_path, cert_paths):
    serve()
    r = subprocess.run([sys.executable, "-m", "host_tools", "commerce", "serve", "--data",
                        serve.data, "--port", "0"], cwd=processes.REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "already running" in r.stderr and r.stderr.count("\n") == 1


def test_kill_9_loses_no_order_and_no_owed_event(serve, cert_paths):
    peer = WebhookPeer(cert_paths["server.pem"], cert_paths["server.key"]).start()
    try:
        proc, _, client = serve("--timeline", "manual", "--retry-base", "0.05")
        client.subscribe("orders", peer.url)
        peer.fail_next = [500] * 1000           # nothing acknowledged before the kill
        fill_cart(client)
        order = client.create_order("cart-1", "k1")
        peer.wait_attempts(1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with pytest.raises(Unavailable):
            client.get_order(order["id"])
        peer.fail_next = []
        _, _, client = serve("--timeline", "manual", "--retry-base", "0.05")
        assert client.create_order("cart-1", "k1")["id"] == order["id"]   # still idempotent
        assert peer.wait_acked(1)[0]["data"]["orderId"] == order["id"]
    finally:
        peer.stop()


def test_offline_advance_and_cancel_reach_the_subscriber_through_a_running_serve(
        serve, capsys, cert_paths):
    peer = WebhookPeer(cert_paths["server.pem"], cert_paths["server.key"]).start()
    try:
        _, _, client = serve("--timeline", "manual")
        capsys.readouterr()  # what `client add` printed
        client.subscribe("orders", peer.url)
        fill_cart(client)
        order = client.create_order("cart-1", "k1")
        code, out, _ = run(capsys, "advance", order["id"], "--data", serve.data)
        assert code == 0 and json.loads(out)["status"] == "payment_authorized"
        code, out, _ = run(capsys, "cancel", order["id"], "--data", serve.data)
        assert code == 0 and json.loads(out)["status"] == "cancelled"
        events = peer.wait_acked(3)
        assert [e["data"]["status"] for e in events] == ["created", "payment_authorized",
                                                        "cancelled"]
        code, _, err = run(capsys, "advance", order["id"], "--data", serve.data)
        assert code == 2 and "cannot advance an order that is cancelled" in err
        code, out, _ = run(capsys, "show", order["id"], "--data", serve.data)
        shown = json.loads(out)
        assert [h["status"] for h in shown["history"]] == ["created", "payment_authorized",
                                                          "cancelled"]
        assert "tok_visa" not in out
        code, out, _ = run(capsys, "list", "--data", serve.data)
        assert code == 0 and order["id"] in out and "cancelled" in out
    finally:
        peer.stop()


def test_a_taken_port_is_one_line_and_writes_nothing(tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "host_tools", "commerce", "serve", "--data",
                            str(tmp_path / "c"), "--port", str(port)], cwd=processes.REPO,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot listen on" in r.stderr
    assert not (tmp_path / "c").exists()
