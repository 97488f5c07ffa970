"""Fixtures: the commerce backend on real HTTPS in a thread with a clock the test moves, a
registered API client, the synchronous client the orchestrator uses, a webhook subscriber."""
import time

import pytest

from host_tools.cloud.commerce import schedule, tokens
from host_tools.cloud.commerce.client import Client
from host_tools.cloud.commerce.server import ServerThread
from host_tools.cloud.commerce.store import Store
from host_tools.cloud.hub import certs
from host_tools.cloud.orders import catalogue
from tests.cloud.commerce.webhook_peer import WebhookPeer
from tests.cloud.orders.conftest import FakeClock

CLIENT_ID = "orders-orchestrator"
SECRET = "s3cret-s3cret-s3cret-s3cret"


@pytest.fixture(scope="session")
def cert_paths(tmp_path_factory):
    paths, _ = certs.ensure(str(tmp_path_factory.mktemp("certs")))
    return paths


def add_client(data_dir, client_id=CLIENT_ID, secret=SECRET):
    store = Store(str(data_dir))
    with store.transaction():
        salt, digest = tokens.hash_secret(secret)
        store.put_client(client_id, salt, digest, time.time())
    store.close()


class Backend:
    def __init__(self, data_dir, cert_paths, clock, **kwargs):
        self.data_dir, self.cert_paths, self.clock, self.kwargs = data_dir, cert_paths, clock, kwargs
        self.thread = None
        self.url = None

    def start(self, spec=None, **overrides):
        add_client(self.data_dir)
        options = dict(dict(poll=0.02, retry_base=1.0, retry_max=8.0), **self.kwargs, **overrides)
        self.thread = ServerThread(str(self.data_dir), catalogue.load(), schedule.parse(spec),
                                   self.cert_paths["server.pem"], self.cert_paths["server.key"],
                                   self.cert_paths["ca.pem"], clock=self.clock, **options)
        self.url = self.thread.start()
        return self

    def stop(self):
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    def client(self, clock=None, secret=SECRET):
        return Client(self.url + "/api", self.url + "/connect/token", CLIENT_ID, secret,
                      ca=self.cert_paths["ca.pem"], clock=clock or self.clock)

    def store(self):
        return Store(str(self.data_dir))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def backend(tmp_path, cert_paths, clock):
    b = Backend(tmp_path / "commerce", cert_paths, clock)
    yield b
    b.stop()


@pytest.fixture
def webhook(cert_paths):
    peer = WebhookPeer(cert_paths["server.pem"], cert_paths["server.key"]).start()
    yield peer
    peer.stop()


def fill_cart(client, cart="cart-1", sku="COFFEE-1KG", quantity=2, token="tok_visa_4242",
              method="standard"):
    client.put_cart(cart, "dev1", "Ada Lovelace")
    client.put_line(cart, sku, quantity)
    client.put_fulfillment(cart, "Ada Lovelace", "12 St James's Sq, London", method)
    return client.put_payment(cart, token)
