"""The token endpoint and the bearer check: client credentials, expiry by the injected clock,
renewal before expiry, one retry on 401, forged and expired tokens refused."""
import base64
import json
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools.cloud.commerce import tokens
from host_tools.cloud.commerce.client import BadCredentials, Refused
from tests.cloud.commerce.conftest import CLIENT_ID, SECRET
from tests.cloud.orders.conftest import FakeClock


def raw(backend, method, path, **kwargs):
    return requests.request(method, backend.url + path, verify=backend.cert_paths["ca.pem"],
                            timeout=10, **kwargs)


def get_token(backend, **kwargs):
    r = raw(backend, "POST", "/connect/token", data={"grant_type": "client_credentials"},
            auth=(CLIENT_ID, SECRET), **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def test_client_credentials_issue_a_signed_jwt_the_jwks_verifies(backend, clock):
    backend.start()
    body = get_token(backend)
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert raw(backend, "POST", "/connect/token", data={
        "grant_type": "client_credentials", "client_id": CLIENT_ID,
        "client_secret": SECRET}).status_code == 200          # client_secret_post works too
    config = raw(backend, "GET", "/.well-known/openid-configuration").json()
    assert config["issuer"] == backend.url and config["token_endpoint"].endswith("/connect/token")
    jwks = raw(backend, "GET", "/.well-known/jwks.json").json()
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "ES256" and header["kid"] == jwks["keys"][0]["kid"]
    key = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(body["access_token"], key, algorithms=["ES256"], audience="commerce-api",
                        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    assert claims["sub"] == CLIENT_ID and claims["iss"] == backend.url
    assert claims["exp"] - claims["iat"] == 3600 and claims["iat"] == int(clock())


@pytest.mark.parametrize("data,auth,status,error", [
    ({"grant_type": "client_credentials"}, (CLIENT_ID, "wrong-secret-wrong"), 401, "invalid_client"),
    ({"grant_type": "client_credentials"}, ("nobody", SECRET), 401, "invalid_client"),
    ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
    ({"grant_type": "password"}, (CLIENT_ID, SECRET), 400, "unsupported_grant_type"),
])
def test_token_endpoint_refuses_bad_requests(backend, data, auth, status, error):
    backend.start()
    r = raw(backend, "POST", "/connect/token", data=data, auth=auth)
    assert r.status_code == status and r.json()["error"] == error
    assert "access_token" not in r.text


def test_api_refuses_missing_malformed_and_wrong_scheme_tokens(backend):
    backend.start()
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer not.a.jwt"},
                    {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}):
        r = raw(backend, "GET", "/api/orders/ORD-000001", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def _forge(backend, claims, key=None, alg="ES256", kid=None):
    jwks = raw(backend, "GET", "/.well-known/jwks.json").json()
    key = key or ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid or jwks["keys"][0]["kid"]})


def test_forged_tokens_are_refused(backend, clock):
    backend.start()
    good = jwt.decode(get_token(backend)["access_token"], options={"verify_signature": False})
    cases = {
        "another key, same kid": _forge(backend, good),
        "HS256 keyed with the public JWK": _forge(backend, good, key="x" * 32, alg="HS256"),
        "unsigned": jwt.encode(good, None, algorithm="none"),
    }
    # a token signed by the real key but edited afterwards
    token = get_token(backend)["access_token"]
    head, payload, sig = token.split(".")
    edited = dict(json.loads(base64.urlsafe_b64decode(payload + "==")), sub="someone-else")
    cases["claims edited"] = ".".join(
        [head, base64.urlsafe_b64encode(json.dumps(edited).encode()).rstrip(b"=").decode(), sig])
    for name, forged in cases.items():
        r = raw(backend, "GET", "/api/orders/ORD-000001",
                headers={"Authorization": "Bearer " + forged})
        assert r.status_code == 401, name


def test_token_for_another_audience_or_issuer_is_refused(backend):
    backend.start()
    server_key = tokens.load_or_create_key(str(backend.data_dir))
    good = jwt.decode(get_token(backend)["access_token"], options={"verify_signature": False})
    for change in ({"aud": "another-api"}, {"iss": "https://elsewhere"}, {"scope": "other"}):
        token = _forge(backend, dict(good, **change), key=server_key)
        r = raw(backend, "GET", "/api/orders/ORD-000001",
                headers={"Authorization": "Bearer " + token})
        assert r.status_code == 401, change
    token = _forge(backend, good, key=server_key)  # control: the same path with nothing changed
    assert raw(backend, "GET", "/api/orders/ORD-000001",
               headers={"Authorization": "Bearer " + token}).status_code == 404


def test_expired_token_is_refused(backend, clock):
    backend.start(token_lifetime=300)
    token = get_token(backend)["access_token"]
    auth = {"Authorization": "Bearer " + token}
    clock.advance(299)
    assert raw(backend, "GET", "/api/orders/ORD-000001", headers=auth).status_code == 404
    clock.advance(1)
    r = raw(backend, "GET", "/api/orders/ORD-000001", headers=auth)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


def test_client_caches_the_token_and_renews_it_before_expiry(backend, clock):
    backend.start(token_lifetime=300)
    client = backend.client()
    client.find_order("k")
    client.find_order("k")
    assert client.stats["tokens"] == 1
    clock.advance(265)            # 35 s left: not yet within a tenth of the lifetime (30 s)
    client.find_order("k")
    assert client.stats["tokens"] == 1
    clock.advance(10)             # 25 s left: renewed before it expires, no 401 on the way
    client.find_order("k")
    assert client.stats == {"tokens": 2, "unauthorized": 0}


def test_client_retries_once_on_401_with_a_fresh_token(backend, clock):
    backend.start(token_lifetime=300)
    slow = FakeClock(clock())            # the client's clock lags: it believes its token is fresh
    client = backend.client(clock=slow)
    client.find_order("k")
    clock.advance(400)                   # the server's clock says it expired
    assert client.find_order("k") is None
    assert client.stats == {"tokens": 2, "unauthorized": 1}


def test_client_gives_up_after_a_second_401(backend, clock):
    backend.start()
    backend.thread.server.issuer.lifetime = 0  # every token is born expired: 401 each time
    client = backend.client()
    with pytest.raises(Refused) as exc:
        client.find_order("k")
    assert exc.value.status == 401 and client.stats == {"tokens": 2, "unauthorized": 1}


def test_wrong_secret_is_bad_credentials(backend):
    backend.start()
    with pytest.raises(BadCredentials):
        backend.client(secret="not-the-secret-at-all").find_order("k")


def test_standard_oauth2_and_jwks_clients_work_against_it(backend):
    """Off-the-shelf clients as oracles: requests-oauthlib's client-credentials flow gets a
    token the API takes, and PyJWT's JWKS client verifies it from the JWKS endpoint."""
    import ssl
    from oauthlib.oauth2 import BackendApplicationClient
    from requests_oauthlib import OAuth2Session
    backend.start()
    ca = backend.cert_paths["ca.pem"]
    session = OAuth2Session(client=BackendApplicationClient(client_id=CLIENT_ID))
    session.trust_env = False
    token = session.fetch_token(backend.url + "/connect/token", client_id=CLIENT_ID,
                                client_secret=SECRET, verify=ca)
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
    r = session.get(backend.url + "/api/orders", params={"idempotencyKey": "k"}, verify=ca)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"   # authorised
    jwks = jwt.PyJWKClient(backend.url + "/.well-known/jwks.json",
                           ssl_context=ssl.create_default_context(cafile=ca))
    key = jwks.get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(token["access_token"], key.key, algorithms=["ES256"],
                        audience="commerce-api", issuer=backend.url,
                        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    assert claims["client_id"] == CLIENT_ID
