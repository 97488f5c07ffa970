"""The commerce backend's rules, over its store: carts, lines, fulfillment, payment, orders,
status changes and the events they owe. No HTTP here (api.py) and no sockets (delivery.py);
time comes from the injected clock.

An order is built the way the article's order orchestration plugin combines it, with the
component names of Sitecore Commerce: CartLineComponent (one per line), a
PhysicalFulfillmentComponent (shipping party and method) and a FederatedPaymentComponent (the
payment provider's token and the amount). Money is integer cents; the API writes decimal strings.
"""
import logging
import re

from host_tools.cloud.commerce import eventgrid, lifecycle
from host_tools.cloud.orders.catalogue import format_cents

log = logging.getLogger("host_tools.cloud.commerce")

TOPIC = "/commerce/local/orders"
_ID = re.compile(r"^[A-Za-z0-9._:@\-]{1,128}$")
_MAX_TEXT = 500


class ApiError(Exception):
    """A refusal with its HTTP status, a stable code and a message a person can act on."""

    def __init__(self, status, code, message, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def body(self):
        return {"error": dict({"code": self.code, "message": self.message}, **self.extra)}


def not_found(what, key):
    return ApiError(404, "not_found", f"no {what} {key}")


def invalid(code, message):
    return ApiError(422, code, message)


def check_id(value, what):
    if not isinstance(value, str) or not _ID.match(value):
        raise ApiError(400, "bad_request",
                       f"{what} must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    return value


def check_text(body, field, required=True):
    value = body.get(field) if isinstance(body, dict) else None
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        raise ApiError(400, "bad_request", f"{field} must be a non-empty string")
    return value.strip()


def mask(token):
    if not token:
        return ""
    return "****" + token[-4:] if len(token) > 8 else "****"


class Commerce:
    def __init__(self, store, catalogue, schedule, clock, topic=TOPIC):
        self.store, self.catalogue, self.schedule = store, catalogue, schedule
        self.clock, self.topic = clock, topic
        self.on_change = None  # called after a commit that queued events (wakes delivery)

    # -- carts ----------------------------------------------------------------------------
    def _cart(self, client_id, cart_id, open_only=False):
        cart = self.store.cart(client_id, check_id(cart_id, "cart id"))
        if cart is None:
            raise not_found("cart", cart_id)
        if open_only and cart.status != "open":
            order = self.store.order_by_cart(cart.pk)
            raise ApiError(409, "cart_ordered", f"cart {cart_id} is already ordered",
                           orderId=order.order_id if order else None)
        return cart

    def put_cart(self, client_id, cart_id, body):
        """Create the cart `cart_id` (the client names it, so a retried call finds it)."""
        check_id(cart_id, "cart id")
        customer = body.get("customer") if isinstance(body, dict) else None
        if not isinstance(customer, dict):
            raise ApiError(400, "bad_request", "customer must be an object {id, name}")
        customer = {"id": check_text(customer, "id"), "name": check_text(customer, "name")}
        with self.store.transaction():
            now = self.clock()
            cart = self.store.cart(client_id, cart_id)
            if cart is None:
                cart = self.store.insert_cart(client_id, cart_id, customer, now)
            elif cart.customer != customer:
                if cart.status != "open":
                    raise ApiError(409, "cart_ordered", f"cart {cart_id} is already ordered")
                cart = self.store.update_cart(cart.pk, now, customer=customer)
            return self.cart_view(cart)

    def get_cart(self, client_id, cart_id):
        return self.cart_view(self._cart(client_id, cart_id))

    def put_line(self, client_id, cart_id, sku, body):
        """Set the line for `sku` to `quantity` (a PUT: repeating it changes nothing)."""
        quantity = body.get("quantity") if isinstance(body, dict) else None
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise ApiError(400, "bad_request", "quantity must be an integer >= 1")
        product = self.catalogue.product(sku)
        if product is None:
            raise invalid("unknown_sku", f"unknown sku {sku}")
        if quantity > product.max_quantity:
            raise invalid("quantity_exceeds_maximum",
                          f"quantity {quantity} exceeds the maximum of {product.max_quantity} "
                          f"for {sku}")
        with self.store.transaction():
            cart = self._cart(client_id, cart_id, open_only=True)
            self.store.put_line(cart.pk, product.sku, product.name, quantity, product.unit_price)
            return self.cart_view(self.store.update_cart(cart.pk, self.clock()))

    def delete_line(self, client_id, cart_id, sku):
        with self.store.transaction():
            cart = self._cart(client_id, cart_id, open_only=True)
            if not self.store.delete_line(cart.pk, sku):
                raise not_found("line", sku)
            return self.cart_view(self.store.update_cart(cart.pk, self.clock()))

    def put_fulfillment(self, client_id, cart_id, body):
        party = body.get("shippingParty") if isinstance(body, dict) else None
        if not isinstance(party, dict):
            raise ApiError(400, "bad_request", "shippingParty must be an object {name, address}")
        party = {"name": check_text(party, "name"), "address": check_text(party, "address")}
        code = check_text(body, "fulfillmentMethod")
        method = self.catalogue.shipping_method(code)
        if method is None:
            raise invalid("unknown_shipping_method", f"shipping method {code} is not offered")
        component = {"type": "PhysicalFulfillmentComponent", "shippingParty": party,
                     "fulfillmentMethod": {"code": method.code, "name": method.name,
                                           "price": format_cents(method.price)},
                     "priceCents": method.price}
        with self.store.transaction():
            cart = self._cart(client_id, cart_id, open_only=True)
            return self.cart_view(self.store.update_cart(cart.pk, self.clock(),
                                                         fulfillment=component))

    def put_payment(self, client_id, cart_id, body):
        """A federated payment: the provider's token; it is authorised when the order moves to
        payment_authorized (a declined token ends the order there)."""
        token = check_text(body, "paymentToken")
        with self.store.transaction():
            cart = self._cart(client_id, cart_id, open_only=True)
            return self.cart_view(self.store.update_cart(
                cart.pk, self.clock(),
                payment={"type": "FederatedPaymentComponent", "paymentToken": token}))

    def _totals(self, cart, lines):
        sub = sum(line.unit_price * line.quantity for line in lines)
        shipping = cart.fulfillment["priceCents"] if cart.fulfillment else 0
        return sub, shipping, sub + shipping

    def cart_view(self, cart):
        lines = self.store.lines(cart.pk)
        sub, shipping, total = self._totals(cart, lines)
        components = [{"type": "CartLineComponent", "sku": line.sku, "name": line.name,
                       "quantity": line.quantity, "unitPrice": format_cents(line.unit_price),
                       "lineTotal": format_cents(line.unit_price * line.quantity)}
                      for line in lines]
        if cart.fulfillment:
            components.append({k: v for k, v in cart.fulfillment.items() if k != "priceCents"})
        if cart.payment:
            components.append({"type": "FederatedPaymentComponent",
                               "paymentToken": mask(cart.payment["paymentToken"]),
                               "amount": format_cents(total)})
        return {"id": cart.cart_id, "status": cart.status, "customer": cart.customer,
                "currency": self.catalogue.currency, "components": components,
                "totals": {"subTotal": format_cents(sub), "shipping": format_cents(shipping),
                           "grandTotal": format_cents(total)}}

    # -- orders ---------------------------------------------------------------------------
    def create_order(self, client_id, key, body):
        """(order view, created): the cart becomes an order once; the same idempotency key
        returns the same order, whatever happened to the first answer."""
        check_id(key, "Idempotency-Key")
        cart_id = check_id(body.get("cartId") if isinstance(body, dict) else None, "cartId")
        with self.store.transaction():
            existing = self.store.order_by_key(client_id, key)
            if existing is not None:
                if self.store.cart_by_pk(existing.cart_pk).cart_id != cart_id:
                    raise invalid("idempotency_key_reused",
                                  f"Idempotency-Key {key} was used for another cart")
                return self.order_view(existing), False
            cart = self._cart(client_id, cart_id, open_only=True)
            lines = self.store.lines(cart.pk)
            if not lines:
                raise invalid("cart_empty", f"cart {cart_id} has no lines")
            if not cart.fulfillment:
                raise invalid("no_fulfillment", f"cart {cart_id} has no fulfillment")
            if not cart.payment:
                raise invalid("no_payment", f"cart {cart_id} has no payment")
            now = self.clock()
            order_id = f"ORD-{self.store.next_number('last_order_number'):06d}"
            view = self.cart_view(cart)
            document = {"components": view["components"], "totals": view["totals"],
                        "customer": cart.customer, "currency": view["currency"]}
            for item in document["components"]:
                if item["type"] == "FederatedPaymentComponent":
                    item["paymentToken"] = cart.payment["paymentToken"]  # masked on the way out
            next_status, next_due = self.schedule.next_step(lifecycle.CREATED, now)
            order = self.store.insert_order(
                order_id, client_id, key, cart.pk, lifecycle.CREATED, now, next_status, next_due,
                self.schedule.eta(now), self._totals(cart, lines)[2], self.catalogue.currency,
                document, "api")
            self.store.update_cart(cart.pk, now, status="ordered")
            self._publish(order, None, now)
            log.info("order %s created from cart %s (key %s)", order_id, cart_id, key)
        self._changed()
        return self.order_view(order), True

    def _owned(self, client_id, order_id):
        order = self.store.order(order_id)
        if order is None or (client_id is not None and order.client_id != client_id):
            raise not_found("order", order_id)
        return order

    def get_order(self, client_id, order_id):
        return self.order_view(self._owned(client_id, order_id))

    def find_order(self, client_id, key):
        order = self.store.order_by_key(client_id, check_id(key, "idempotencyKey"))
        if order is None:
            raise not_found("order with idempotency key", key)
        return self.order_view(order)

    def order_view(self, order, history=False):
        document = dict(order.document)
        document["components"] = [dict(c) for c in document.get("components", ())]
        for item in document["components"]:
            if "paymentToken" in item:
                item["paymentToken"] = mask(item["paymentToken"])
        view = {"id": order.order_id, "status": order.status, "version": order.version,
                "idempotencyKey": order.idempotency_key,
                "cartId": self.store.cart_by_pk(order.cart_pk).cart_id,
                "placedAt": eventgrid.iso(order.placed_at),
                "updatedAt": eventgrid.iso(order.updated_at), **document}
        if order.reason:
            view["reason"] = order.reason
        if order.eta is not None and order.status not in lifecycle.TERMINAL:
            view["eta"] = eventgrid.iso(order.eta)
        if order.next_status:
            view["next"] = {"status": order.next_status, "at": eventgrid.iso(order.next_due)}
        if history:
            view["history"] = [{"version": h.version, "at": eventgrid.iso(h.at),
                                "status": h.status, "source": h.source,
                                **({"reason": h.reason} if h.reason else {})}
                               for h in self.store.history(order.pk)]
        return view

    # -- status changes -------------------------------------------------------------------
    def _move(self, order, status, reason, now, source):
        previous = order.status
        if status in lifecycle.TERMINAL:
            next_status, next_due = None, None
        else:
            next_status, next_due = self.schedule.next_step(status, order.placed_at)
        order = self.store.update_order(order, status, reason, now, next_status, next_due, source)
        self._publish(order, previous, now)
        log.info("order %s is %s%s", order.order_id, status, f" ({reason})" if reason else "")
        return order

    def _step(self, order, now, source):
        token = next((c.get("paymentToken") for c in order.document.get("components", ())
                      if c.get("type") == "FederatedPaymentComponent"), None)
        status, reason = lifecycle.advance(order.status, token)
        return self._move(order, status, reason, now, source)

    def advance(self, client_id, order_id, to=None, source="operator"):
        """One step on (or every step up to `to`); authorisation may decline on the way."""
        with self.store.transaction():
            order = self._owned(client_id, order_id)
            now = self.clock()
            try:
                target = to or lifecycle.next_progress(order.status)
                if target is None:
                    raise lifecycle.IllegalTransition(order.status, "advance")
                steps = lifecycle.path_to(order.status, target)
            except lifecycle.IllegalTransition as exc:
                raise ApiError(409, "illegal_transition", str(exc)) from None
            for _ in steps:
                order = self._step(order, now, source)
                if order.status in lifecycle.TERMINAL:
                    break
        self._changed()
        return self.order_view(order)

    def cancel(self, client_id, order_id, source="api"):
        """Cancel before shipment; later it is refused (409) and nothing changes. Cancelling a
        cancelled order answers it again."""
        with self.store.transaction():
            order = self._owned(client_id, order_id)
            if order.status == lifecycle.CANCELLED:
                return self.order_view(order)
            if not lifecycle.can_cancel(order.status):
                reason = lifecycle.CANCEL_REFUSED if order.status in (
                    lifecycle.SHIPPED, lifecycle.DELIVERED) else f"order is {order.status}"
                raise ApiError(409, "cancel_refused", reason, orderStatus=order.status)
            order = self._move(order, lifecycle.CANCELLED, "cancelled by the customer",
                               self.clock(), source)
        self._changed()
        return self.order_view(order)

    def run_due(self):
        """Move every order whose scheduled step is due; returns the number of steps."""
        steps = 0
        while True:
            with self.store.transaction():
                now = self.clock()
                batch = self.store.due(now)
                for order in batch:
                    self._step(order, now, "timeline")
            steps += len(batch)
            if not batch:
                break
        if steps:
            self._changed()
        return steps

    # -- events ---------------------------------------------------------------------------
    def _publish(self, order, previous, now):
        """Queue the status change for every subscription, in the caller's transaction."""
        subs = self.store.subscriptions()
        if not subs:
            return
        data = {"orderId": order.order_id, "status": order.status, "previousStatus": previous,
                "version": order.version, "idempotencyKey": order.idempotency_key,
                "cartId": self.store.cart_by_pk(order.cart_pk).cart_id}
        if order.reason:
            data["reason"] = order.reason
        if order.eta is not None and order.status not in lifecycle.TERMINAL:
            data["eta"] = eventgrid.iso(order.eta)
        for sub in subs:
            event = eventgrid.event(self.topic, f"/orders/{order.order_id}",
                                    lifecycle.EVENT_TYPES[order.status], data, now)
            self.store.add_delivery(sub.name, event, now)

    def _changed(self):
        if self.on_change is not None:
            self.on_change()
