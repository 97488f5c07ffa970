"""A synchronous client of the commerce API, as the orchestrator (the article's Logic App)
calls it: an access token from the identity endpoint (client credentials), cached and renewed
before it expires, sent as a bearer token on every call; a 401 drops the token and retries the
call once with a fresh one.

Errors: `Unavailable` (no answer, 5xx, 429: try again later, nothing was decided), `Refused`
(the API said no: 4xx with its code and message), `BadCredentials` (the identity endpoint
refused the client id or secret: configuration, not a transient failure).
"""
import time
from urllib.parse import quote

import requests

_MAX_MARGIN = 60.0


class CommerceError(Exception):
    pass


class Unavailable(CommerceError):
    pass


class BadCredentials(CommerceError):
    pass


class Refused(CommerceError):
    def __init__(self, status, code, message, body=None):
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message, self.body = status, code, message, body or {}


def _q(segment):
    return quote(segment, safe="")


class Client:
    def __init__(self, api_url, token_url, client_id, secret, ca=None, clock=time.time,
                 timeout=10.0):
        self.api_url = api_url.rstrip("/")
        self.token_url = token_url
        self.client_id, self._secret = client_id, secret
        self.verify = ca if ca else True
        self.clock, self.timeout = clock, timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, and our CA even when REQUESTS_CA_BUNDLE is set
        self._token = None
        self._renew_at = 0.0
        self.stats = {"tokens": 0, "unauthorized": 0}

    def close(self):
        self.session.close()

    # -- identity -------------------------------------------------------------------------
    def token(self):
        """The cached access token, fetched again when it is within a tenth of its lifetime
        (at most a minute) of expiring."""
        now = self.clock()
        if self._token is not None and now < self._renew_at:
            return self._token
        try:
            r = self.session.post(self.token_url, data={"grant_type": "client_credentials"},
                                  auth=(self.client_id, self._secret), verify=self.verify,
                                  timeout=self.timeout)
        except requests.RequestException as exc:
            raise Unavailable(f"identity endpoint {self.token_url}: {_why(exc)}") from None
        if r.status_code in (400, 401):
            raise BadCredentials(f"identity endpoint refused client {self.client_id}: "
                                 f"{_json(r).get('error_description') or r.status_code}")
        if r.status_code != 200:
            raise Unavailable(f"identity endpoint answered HTTP {r.status_code}")
        body = _json(r)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(lifetime, (int, float)):
            raise Unavailable("identity endpoint sent no access_token/expires_in")
        self._token = token
        self._renew_at = now + lifetime - min(_MAX_MARGIN, lifetime / 10)
        self.stats["tokens"] += 1
        return token

    def forget_token(self):
        self._token = None

    # -- calls ----------------------------------------------------------------------------
    def _call(self, method, path, body=None, headers=None, params=None):
        for attempt in (0, 1):
            hdrs = dict(headers or {}, Authorization="Bearer " + self.token())
            try:
                r = self.session.request(method, self.api_url + path, json=body, headers=hdrs,
                                         params=params, verify=self.verify, timeout=self.timeout)
            except requests.RequestException as exc:
                raise Unavailable(f"{method} {path}: {_why(exc)}") from None
            if r.status_code == 401 and attempt == 0:
                self.stats["unauthorized"] += 1
                self._token = None  # expired or revoked early: one retry with a new one
                continue
            break
        if r.status_code in (200, 201):
            return _json(r)
        if r.status_code == 429 or r.status_code >= 500:
            raise Unavailable(f"{method} {path}: HTTP {r.status_code}")
        error = _json(r).get("error") or {}
        if not isinstance(error, dict):
            error = {"code": str(error)}
        raise Refused(r.status_code, error.get("code", "error"),
                      error.get("message", r.reason or ""), error)

    def put_cart(self, cart_id, customer_id, customer_name):
        return self._call("PUT", f"/carts/{_q(cart_id)}",
                          {"customer": {"id": customer_id, "name": customer_name}})

    def get_cart(self, cart_id):
        return self._call("GET", f"/carts/{_q(cart_id)}")

    def put_line(self, cart_id, sku, quantity):
        return self._call("PUT", f"/carts/{_q(cart_id)}/lines/{_q(sku)}", {"quantity": quantity})

    def put_fulfillment(self, cart_id, name, address, method):
        return self._call("PUT", f"/carts/{_q(cart_id)}/fulfillment",
                          {"shippingParty": {"name": name, "address": address},
                           "fulfillmentMethod": method})

    def put_payment(self, cart_id, payment_token):
        return self._call("PUT", f"/carts/{_q(cart_id)}/payment",
                          {"paymentToken": payment_token})

    def create_order(self, cart_id, idempotency_key):
        return self._call("POST", "/orders", {"cartId": cart_id},
                          headers={"Idempotency-Key": idempotency_key})

    def find_order(self, idempotency_key):
        """The order placed with this key, or None."""
        try:
            return self._call("GET", "/orders", params={"idempotencyKey": idempotency_key})
        except Refused as exc:
            if exc.status == 404:
                return None
            raise

    def get_order(self, order_id):
        return self._call("GET", f"/orders/{_q(order_id)}")

    def cancel(self, order_id):
        return self._call("POST", f"/orders/{_q(order_id)}/cancel", {})

    def advance(self, order_id, to=None):
        return self._call("POST", f"/orders/{_q(order_id)}/advance", {"to": to} if to else {})

    def subscribe(self, name, endpoint_url):
        return self._call("PUT", f"/subscriptions/{_q(name)}", {"endpointUrl": endpoint_url})


def _json(response):
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _why(exc):
    text = str(exc)
    for marker in ("Connection refused", "timed out", "CERTIFICATE_VERIFY_FAILED",
                   "Name or service not known"):
        if marker in text:
            return marker
    return type(exc).__name__
