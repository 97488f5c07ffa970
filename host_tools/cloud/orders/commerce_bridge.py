"""The orchestrator's side of the commerce backend, as the article's Logic App does it.

    device orderRequest ──(one transaction with the hub cursor)──> commerce_work 'place'
    run(): token -> cart -> line -> fulfillment -> payment -> order   (commerce API, HTTPS)
           the order and its 'accepted' C2D commit together, the work row goes
    webhook: Event Grid events (status changes) -> the device's order-status C2D

Exactly once without a distributed transaction: every call in the chain is idempotent on the
commerce side (the cart is named by the request's idempotency key, PUTs set rather than add,
the order is created with the Idempotency-Key), so after a crash anywhere the chain is simply
run again and finds what the first run made. The key is `deviceId:orderRequestId` (hashed when
the device id has characters the API does not take in a key).

The commerce backend down: work rows stay, retried with backoff (base..max seconds by the
service's clock); the device gets its status when the backend is back, as it would from a
slow Logic App.
"""
import hashlib
import logging
import re
import threading
from datetime import datetime

from firmware.app import schemas
from host_tools.cloud.commerce import client as commerce_client
from host_tools.cloud.commerce import lifecycle as commerce_lifecycle
from host_tools.cloud.orders import lifecycle
from host_tools.cloud.orders.catalogue import CatalogueError, to_cents

log = logging.getLogger("host_tools.cloud.orders")

PLACE, CANCEL = "place", "cancel"
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._:@\-]{1,128}$")

# commerce status -> the device's order status (firmware/app/README.md)
DEVICE_STATUS = {
    commerce_lifecycle.CREATED: lifecycle.ACCEPTED,
    commerce_lifecycle.PAYMENT_AUTHORIZED: lifecycle.PAYMENT_AUTHORIZED,
    commerce_lifecycle.PAYMENT_DECLINED: lifecycle.FAILED,
    commerce_lifecycle.SHIPPED: lifecycle.SHIPPED,
    commerce_lifecycle.DELIVERED: lifecycle.DELIVERED,
    commerce_lifecycle.CANCELLED: lifecycle.CANCELLED,
}
_VOLATILE = frozenset(("status", "version", "updatedAt", "next", "eta", "reason"))


class NotYet(Exception):
    """An event for an order whose placement is still being recorded: answer 503 so that
    Event Grid redelivers it later."""


def idempotency_key(device_id, request_id):
    key = f"{device_id}:{request_id}"
    if _SAFE_KEY.match(key):
        return key
    return "h-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def parse_iso(text):
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def is_commerce_order(order):
    return bool(order.document) and "idempotencyKey" in order.document


def newer(current, new):
    """Whether moving the device's order from `current` to `new` is progress (events may come
    out of order or twice: Event Grid promises neither). The device's own rule decides, so
    the service never sends what the device would drop as stale."""
    return schemas.follows(new, current)


class Bridge:
    def __init__(self, client, subscription=None, webhook_url=None, retry_base=0.5,
                 retry_max=5.0):
        self.client = client
        self.subscription, self.webhook_url = subscription, webhook_url
        self.retry_base, self.retry_max = retry_base, retry_max
        self.subscribed = webhook_url is None
        self.trouble = None
        self.stats = {"placed": 0, "rejected": 0, "retries": 0, "events": 0,
                      "unknown_events": 0, "stale_events": 0}

    # -- inside the service's event transaction --------------------------------------------
    def pending(self, store, device_id, request_id):
        return bool(store.work_for(device_id, request_id))

    def request_place(self, store, device_id, request, now):
        key = idempotency_key(device_id, request.request_id)
        return store.add_work(PLACE, device_id, request.request_id, key, request.sku,
                              request.quantity, now)

    def request_cancel(self, store, device_id, request_id, now):
        key = idempotency_key(device_id, request_id)
        return store.add_work(CANCEL, device_id, request_id, key, None, None, now)

    # -- the worker -------------------------------------------------------------------------
    def next_wakeup(self, store):
        return store.next_work()

    def run(self, service):
        """Do the commerce work that is due; returns how many items finished. Stops at the
        first sign that the commerce API is unavailable (the rest waits for the backoff)."""
        if not self.subscribed:
            try:
                self.client.subscribe(self.subscription, self.webhook_url)
                self.subscribed = True
                log.info("subscribed to commerce events as %s", self.subscription)
                if self.trouble:
                    log.warning("commerce API back (%s)", self.trouble)
                    self.trouble = None
            except commerce_client.CommerceError as exc:
                self._trouble(f"cannot subscribe to commerce events yet: {exc}")
        store = service.store
        done = 0
        for work in store.work_due(service.clock()):
            try:
                outcome = self._place(service, work) if work["kind"] == PLACE \
                    else self._cancel(service, work)
            except (commerce_client.Unavailable, commerce_client.BadCredentials) as exc:
                self._retry(service, work, exc)
                break
            except commerce_client.Refused as exc:  # 401 twice, or the API changed: retry
                self._retry(service, work, exc)
                break
            with store.transaction():
                outcome(service.clock())
                store.work_done(work["id"])
            done += 1
        if done and self.trouble:
            log.warning("commerce API back (%s)", self.trouble)
            self.trouble = None
        return done

    def _trouble(self, text):
        if self.trouble is None:
            log.warning("%s; retrying with backoff", text)
        self.trouble = text

    def _retry(self, service, work, exc):
        self.stats["retries"] += 1
        delay = min(self.retry_max, self.retry_base * (2 ** work["attempts"]))
        with service.store.transaction():
            service.store.work_retry(work["id"], str(exc), service.clock() + delay)
        self._trouble(f"commerce API: {exc}")

    def _place(self, service, work):
        """Run the chain (again, after a crash: every step finds what the last run made) and
        return what to commit."""
        device_id, request_id, key = work["device_id"], work["request_id"], work["idempotency_key"]
        profile = service.profile(device_id)
        if profile is None:
            return lambda now: service.record_failed(device_id, request_id,
                                                     "no customer profile for this device", now)
        c = self.client
        try:
            c.put_cart(key, device_id, profile.name)
            c.put_line(key, work["sku"], work["quantity"])
            c.put_fulfillment(key, profile.name, profile.address, profile.shipping_method)
            c.put_payment(key, profile.payment_token)
            order = c.create_order(key, key)
        except commerce_client.Refused as exc:
            if exc.code == "cart_ordered":       # ordered before a crash: find that order
                order = c.find_order(key)
                if order is None:
                    raise
            elif exc.status in (400, 404, 409, 422):
                self.stats["rejected"] += 1
                reason = exc.message
                return lambda now: service.record_failed(device_id, request_id, reason, now)
            else:
                raise
        self.stats["placed"] += 1
        return lambda now: self._record_placed(service, work, order, now)

    def _record_placed(self, service, work, view, now):
        try:
            amount = to_cents(view["totals"]["grandTotal"], "grandTotal")
        except (KeyError, TypeError, CatalogueError):
            amount = None
        status = DEVICE_STATUS.get(view.get("status"), lifecycle.ACCEPTED)
        # what the order is, not where it stands: the statuses are kept by the service
        document = {k: v for k, v in view.items() if k not in _VOLATILE}
        service.record_commerce_order(work["device_id"], work["request_id"], view["id"], status,
                                      view.get("reason"), parse_iso(view.get("eta")), amount,
                                      view.get("currency"), document, now)

    def _cancel(self, service, work):
        device_id, request_id = work["device_id"], work["request_id"]
        order = service.store.find(device_id, request_id)
        if order is None or not is_commerce_order(order) \
                or lifecycle.cancel_outcome(order.status) != lifecycle.CANCEL_APPLY:
            # never placed, failed, or already past the point of cancelling: the service
            # answers from what it knows, as it always did
            return lambda now: service.cancel_locally(device_id, request_id, now)
        try:
            view = self.client.cancel(order.order_id)
        except commerce_client.Refused as exc:
            if exc.code != "cancel_refused":
                raise
            status = DEVICE_STATUS.get(exc.body.get("orderStatus"), order.status)
            message = exc.message
            return lambda now: service.commerce_cancel_refused(device_id, request_id, status,
                                                               message, now)
        status = DEVICE_STATUS[view["status"]]
        return lambda now: service.apply_commerce_status(device_id, request_id, status,
                                                         view.get("reason"), now)

    # -- the webhook -----------------------------------------------------------------------
    def apply_events(self, service, events):
        """Turn Event Grid events into device statuses, in one transaction. NotYet when one of
        them is for an order whose placement is still in progress."""
        store = service.store
        with store.transaction():
            now = service.clock()
            for event in events:
                self.stats["events"] += 1
                status = commerce_lifecycle.STATUS_OF_EVENT.get(event.get("eventType"))
                data = event.get("data") or {}
                if status is None:
                    log.info("ignored event %s (%s)", event.get("id"), event.get("eventType"))
                    continue
                order = store.find_order_id(data.get("orderId")) \
                    if isinstance(data.get("orderId"), str) else None
                if order is None or not is_commerce_order(order):
                    key = data.get("idempotencyKey")
                    if isinstance(key, str) and store.work_by_key(key):
                        raise NotYet(key)
                    self.stats["unknown_events"] += 1
                    log.warning("event %s for an unknown order %r: acknowledged, ignored",
                                event.get("eventType"), data.get("orderId"))
                    continue
                reason = data.get("reason") if status == commerce_lifecycle.PAYMENT_DECLINED \
                    else None
                if not service.apply_commerce_status(order.device_id, order.request_id,
                                                     DEVICE_STATUS[status], reason, now):
                    self.stats["stale_events"] += 1

    def webhook_handler(self, service, wake=None):
        """on_events for webhook.WebhookServer: apply and commit with `service` (the webhook
        thread's own, on its own store connection, without a hub), then `wake()` the serve
        loop, which sends the outbox. Deliveries are applied one at a time."""
        one_at_a_time = threading.Lock()

        def on_events(events):
            with one_at_a_time:
                return apply(events)

        def apply(events):
            try:
                self.apply_events(service, events)
            except NotYet as exc:
                log.info("event for %s arrived before its placement was recorded: "
                         "asking for redelivery", exc)
                return 503
            except Exception:
                log.exception("could not apply commerce events; Event Grid will redeliver")
                return 500
            if wake is not None:
                wake()
            return 200
        return on_events
