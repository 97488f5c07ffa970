"""The HTTP surface of the commerce backend (aiohttp): the identity endpoints and the commerce
API, which requires a bearer token the identity endpoint issued.

  GET  /.well-known/openid-configuration    issuer, token endpoint, JWKS URI
  GET  /.well-known/jwks.json               the public signing key(s)
  POST /connect/token                       OAuth2 client credentials -> access token (JWT)
  PUT  /api/carts/{cartId}                  create the cart (client-chosen id) {customer}
  GET  /api/carts/{cartId}
  PUT  /api/carts/{cartId}/lines/{sku}      {quantity}: CartLineComponent
  DELETE /api/carts/{cartId}/lines/{sku}
  PUT  /api/carts/{cartId}/fulfillment      {shippingParty {name, address}, fulfillmentMethod}
  PUT  /api/carts/{cartId}/payment          {paymentToken}: FederatedPaymentComponent
  POST /api/orders                          {cartId} + header Idempotency-Key -> 201 | 200 replay
  GET  /api/orders/{orderId}   GET /api/orders?idempotencyKey=KEY
  POST /api/orders/{orderId}/cancel         409 once shipped
  POST /api/orders/{orderId}/advance        {to?}: move the order on (tests, operators)
  PUT  /api/subscriptions/{name}            {endpointUrl}: Event Grid webhook subscription,
  GET  /api/subscriptions                   active once the validation handshake succeeded
  DELETE /api/subscriptions/{name}
Errors are JSON {"error": {"code", "message"}}; the token endpoint's follow RFC 6749.
"""
import base64
import binascii
import json
import logging
from urllib.parse import unquote, urlsplit

from aiohttp import web

from host_tools.cloud.commerce import delivery, tokens
from host_tools.cloud.commerce.backend import ApiError, check_id

log = logging.getLogger("host_tools.cloud.commerce")
MAX_BODY = 64 * 1024

COMMERCE = web.AppKey("commerce", object)
ISSUER = web.AppKey("issuer", object)
SESSION = web.AppKey("session", object)
OPTIONS = web.AppKey("options", dict)
CLIENT_ID = web.RequestKey("client_id", str)


async def _json_body(request):
    if not request.can_read_body:
        return {}
    try:
        body = json.loads(await request.text() or "{}")
    except ValueError:
        raise ApiError(400, "bad_request", "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    return body


def _bearer_error(description):
    return web.json_response(
        {"error": {"code": "invalid_token", "message": description}}, status=401,
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", '
                                     f'error_description="{description}"'})


@web.middleware
async def errors_and_auth(request, handler):
    try:
        if request.path.startswith("/api/"):
            app = request.app
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return _bearer_error("missing bearer token")
            try:
                claims = app[ISSUER].verify(token.strip(), app[COMMERCE].clock())
            except tokens.InvalidToken as exc:
                return _bearer_error(str(exc))
            request[CLIENT_ID] = claims["sub"]
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": {"code": "internal", "message": "internal error"}},
                                 status=500)


# -- identity ----------------------------------------------------------------------------
def _oauth_error(status, error, description, basic=False):
    headers = {"Cache-Control": "no-store"}
    if basic:
        headers["WWW-Authenticate"] = 'Basic realm="commerce"'
    return web.json_response({"error": error, "error_description": description}, status=status,
                             headers=headers)


async def token(request):
    commerce = request.app[COMMERCE]
    form = await request.post()
    client_id, secret, basic = form.get("client_id"), form.get("client_secret"), False
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return _oauth_error(401, "invalid_client", "malformed Basic credentials", True)
        user, _, password = decoded.partition(":")
        client_id, secret, basic = unquote(user), unquote(password), True
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
    if not client_id or not secret:
        return _oauth_error(401, "invalid_client", "client credentials are required", basic)
    record = commerce.store.client(client_id)
    if record is None or not tokens.secret_matches(secret, record.salt, record.secret_hash):
        log.warning("token refused for client %s: bad credentials", client_id)
        return _oauth_error(401, "invalid_client", "unknown client or wrong secret", basic)
    body = request.app[ISSUER].issue(client_id, commerce.clock())
    return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def jwks(request):
    return web.json_response(request.app[ISSUER].jwks())


async def openid_configuration(request):
    issuer = request.app[ISSUER].issuer
    return web.json_response({"issuer": issuer, "token_endpoint": issuer + "/connect/token",
                              "jwks_uri": issuer + "/.well-known/jwks.json",
                              "grant_types_supported": ["client_credentials"],
                              "token_endpoint_auth_methods_supported":
                                  ["client_secret_basic", "client_secret_post"],
                              "id_token_signing_alg_values_supported": [tokens.ALGORITHM],
                              "scopes_supported": [tokens.SCOPE]})


# -- commerce ----------------------------------------------------------------------------
def _c(request):
    return request.app[COMMERCE], request[CLIENT_ID], request.match_info


async def put_cart(request):
    commerce, client, m = _c(request)
    return web.json_response(commerce.put_cart(client, m["cart"], await _json_body(request)))


async def get_cart(request):
    commerce, client, m = _c(request)
    return web.json_response(commerce.get_cart(client, m["cart"]))


async def put_line(request):
    commerce, client, m = _c(request)
    return web.json_response(commerce.put_line(client, m["cart"], m["sku"],
                                               await _json_body(request)))


async def delete_line(request):
    commerce, client, m = _c(request)
    return web.json_response(commerce.delete_line(client, m["cart"], m["sku"]))


async def put_fulfillment(request):
    commerce, client, m = _c(request)
    return web.json_response(commerce.put_fulfillment(client, m["cart"],
                                                      await _json_body(request)))


async def put_payment(request):
    commerce, client, m = _c(request)
    return web.json_response(commerce.put_payment(client, m["cart"], await _json_body(request)))


async def create_order(request):
    commerce, client, _ = _c(request)
    key = request.headers.get("Idempotency-Key")
    if not key:
        raise ApiError(400, "bad_request", "the Idempotency-Key header is required")
    order, created = commerce.create_order(client, key, await _json_body(request))
    return web.json_response(order, status=201 if created else 200,
                             headers=None if created else {"Idempotent-Replayed": "true"})


async def get_order(request):
    commerce, client, m = _c(request)
    return web.json_response(commerce.get_order(client, m["order"]))


async def find_order(request):
    commerce, client, _ = _c(request)
    key = request.query.get("idempotencyKey")
    if not key:
        raise ApiError(400, "bad_request", "query parameter idempotencyKey is required")
    return web.json_response(commerce.find_order(client, key))


async def cancel_order(request):
    commerce, client, m = _c(request)
    return web.json_response(commerce.cancel(client, m["order"]))


async def advance_order(request):
    commerce, client, m = _c(request)
    body = await _json_body(request)
    to = body.get("to")
    if to is not None and not isinstance(to, str):
        raise ApiError(400, "bad_request", "to must be a status name")
    return web.json_response(commerce.advance(client, m["order"], to, source="api"))


async def put_subscription(request):
    commerce = request.app[COMMERCE]
    name = check_id(request.match_info["name"], "subscription name")
    body = await _json_body(request)
    endpoint = body.get("endpointUrl")
    if not isinstance(endpoint, str) or urlsplit(endpoint).scheme != "https" \
            or not urlsplit(endpoint).hostname:
        raise ApiError(400, "bad_request", "endpointUrl must be an https:// URL")
    try:
        await delivery.validate(request.app[SESSION], name, endpoint, commerce.topic,
                                commerce.clock(), request.app[OPTIONS]["validation_timeout"])
    except delivery.ValidationFailed as exc:
        raise ApiError(400, "validation_failed", str(exc)) from None
    with commerce.store.transaction():
        existed = any(s.name == name for s in commerce.store.subscriptions())
        commerce.store.put_subscription(name, endpoint, commerce.clock())
    log.info("subscription %s -> %s validated", name, urlsplit(endpoint)._replace(query="").geturl())
    return web.json_response({"name": name, "provisioningState": "Succeeded"},
                             status=200 if existed else 201)


async def list_subscriptions(request):
    store = request.app[COMMERCE].store
    return web.json_response([{"name": s.name, "provisioningState": "Succeeded"}
                              for s in store.subscriptions()])


async def delete_subscription(request):
    commerce = request.app[COMMERCE]
    with commerce.store.transaction():
        if not commerce.store.delete_subscription(request.match_info["name"]):
            raise ApiError(404, "not_found", f"no subscription {request.match_info['name']}")
    return web.json_response({}, status=200)


def make_app(commerce, issuer, session, validation_timeout=30.0, middlewares=()):
    app = web.Application(middlewares=[*middlewares, errors_and_auth], client_max_size=MAX_BODY)
    app[COMMERCE], app[ISSUER], app[SESSION] = commerce, issuer, session
    app[OPTIONS] = {"validation_timeout": validation_timeout}
    r = app.router
    r.add_get("/.well-known/openid-configuration", openid_configuration)
    r.add_get("/.well-known/jwks.json", jwks)
    r.add_post("/connect/token", token)
    r.add_put("/api/carts/{cart}", put_cart)
    r.add_get("/api/carts/{cart}", get_cart)
    r.add_put("/api/carts/{cart}/lines/{sku}", put_line)
    r.add_delete("/api/carts/{cart}/lines/{sku}", delete_line)
    r.add_put("/api/carts/{cart}/fulfillment", put_fulfillment)
    r.add_put("/api/carts/{cart}/payment", put_payment)
    r.add_post("/api/orders", create_order)
    r.add_get("/api/orders", find_order)
    r.add_get("/api/orders/{order}", get_order)
    r.add_post("/api/orders/{order}/cancel", cancel_order)
    r.add_post("/api/orders/{order}/advance", advance_order)
    r.add_put("/api/subscriptions/{name}", put_subscription)
    r.add_get("/api/subscriptions", list_subscriptions)
    r.add_delete("/api/subscriptions/{name}", delete_subscription)
    return app
