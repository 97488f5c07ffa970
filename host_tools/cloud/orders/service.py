"""The order service: the I/O around the pure parts.

    Event Hubs-compatible endpoint --next_events()--> handle_events --> orders + outbox + cursors
    clock                          ------------------> run_due       --> timeline steps + outbox
    outbox                         --send_c2d()------> /messages/devicebound --> device

The hub is reached as an Azure client (host_tools.cloud.azure.client.AzureHub): telemetry with
azure-eventhub from the service's own per-partition cursors, C2D over AMQP.

Exactly once, by construction:
- an order is keyed by (deviceId, orderRequestId) (UNIQUE in SQLite): a redelivered or re-sent
  request finds the existing order and gets its current status back;
- a batch of events (from any partitions), the orders it creates and the new cursor of each
  partition commit together: a crash before the commit replays the batch (nothing was
  written), a crash after it does not re-read it;
- each status change and its C2D message commit together into the outbox; the outbox is sent
  after the commit and a message is deleted once the hub accepted it. The deletion does not get
  a commit of its own: it joins a later batch's transaction (one commit per batch), or, after
  a turn without telemetry, a transaction of its own. A crash before it re-sends those
  messages with the same message ids, which the device ignores as stale.
- the outbox goes out at the start of a turn and the hub's answers are read after that turn's
  batch of events is committed: the two commits (ours and the hub's) overlap.

Time comes from `clock` (a callable returning Unix seconds) and the schedule from `timeline`
(host_tools.cloud.orders.timeline.Timeline), both injected, so tests drive time without sleeping.
"""
import logging
import threading
import time
import uuid

from host_tools.cloud.orders import commerce, lifecycle, messages

log = logging.getLogger("host_tools.cloud.orders")

_DUE_BATCH = 100
_OUTBOX_BATCH = 100
_STEP_SEND = 1000       # outbox messages a turn sends before it reads telemetry
_MAX_BACKOFF = 5.0


class NotFound(LookupError):
    pass


class CommerceOwned(ValueError):
    """An operator command on an order the commerce system runs: change it there."""

    def __init__(self, order):
        super().__init__(f"{order.order_id} was placed through the commerce API, which runs its "
                         f"statuses: use `python -m host_tools commerce advance|cancel "
                         f"{order.order_id}`")


class Ambiguous(LookupError):
    def __init__(self, key, orders):
        super().__init__(f"{key} matches {len(orders)} orders")
        self.orders = orders


def hub_errors():
    from host_tools.cloud.azure.client import HubUnavailable, ServiceError
    return HubUnavailable, ServiceError


def profile_from_row(row):
    if row is None:
        return None
    return commerce.Profile(row["device_id"], row["name"], row["address"],
                            row["shipping_method"], row["payment_token"])


def _give_up(status, attempts, max_attempts):
    """404: the device is gone. 403 (its C2D queue is full), 429 and 5xx pass: retry them for
    as long as it takes. Any other refusal will not change: give up after max_attempts."""
    if status == 404:
        return True
    if status in (403, 429) or status >= 500:
        return False
    return attempts >= max_attempts


class OrderService:
    def __init__(self, store, catalogue, timeline, connect=None, clock=time.time,
                 new_message_id=None, max_attempts=10, c2d_ttl=None, bridge=None):
        """connect: a callable returning an AzureHub (called again after an outage);
        None for the CLI's offline commands, which only write to the store and the outbox.
        c2d_ttl: seconds a status waits in the device's C2D queue (None: the hub's default).
        bridge: a commerce_bridge.Bridge when orders are placed through the commerce API
        (then the commerce backend runs the timeline)."""
        self.store = store
        self.catalogue = catalogue
        self.timeline = timeline
        self.connect = connect
        self.clock = clock
        self.new_message_id = new_message_id or (lambda: "os-" + uuid.uuid4().hex)
        self.max_attempts = max_attempts
        self.c2d_ttl = c2d_ttl
        self.bridge = bridge
        self.client = None
        self._sent = {}     # outbox id -> accepted by the hub, deletion not yet committed
        self.stats = {"events": 0, "placed": 0, "duplicates": 0, "failed": 0, "cancelled": 0,
                      "skipped": 0, "sent": 0, "ignored": 0, "queries": 0, "answers": 0,
                      "unanswered": 0}

    # -- telemetry in --------------------------------------------------------------------
    def handle_events(self, events, next_cursors):
        """Apply a batch of hub events and move the partitions' cursors, in one transaction."""
        from sqlite3 import Error as DbError
        with self.store.transaction():
            now = self.clock()
            for event in events:
                self.stats["events"] += 1
                try:
                    with self.store.transaction():  # a savepoint: a bad event undoes only itself
                        self._handle_event(event, now)
                except DbError:
                    raise  # storage trouble: keep the cursor, retry the whole batch later
                except Exception:
                    self.stats["skipped"] += 1
                    log.exception("skipped event seq=%s from %s: unexpected error",
                                  event.get("seq"), event.get("deviceId"))
            self.store.set_cursors(next_cursors)
            forgotten = self._forget_sent()
        self._forgot(forgotten)

    def _forget_sent(self):
        """Delete the messages the hub accepted, in the caller's transaction; returns their ids
        for _forgot() once that transaction has committed."""
        ids = list(self._sent)
        for outbox_id in ids:
            self.store.delivered(outbox_id)
        return ids

    def _forgot(self, ids):
        for outbox_id in ids:
            self._sent.pop(outbox_id, None)

    def forget_sent(self):
        """Commit the deletion of what the hub accepted (when no batch of events will)."""
        if self._sent:
            with self.store.transaction():
                ids = self._forget_sent()
            self._forgot(ids)

    def _handle_event(self, event, now):
        device_id = event.get("deviceId")
        try:
            request = messages.parse_event(event)
        except messages.Malformed as exc:
            if exc.kind == messages.ORDER_REQUEST and exc.request_id and device_id:
                existing = self.store.find(device_id, exc.request_id)
                if existing is None:
                    self._record_failed(device_id, exc.request_id, "invalid request: " + exc.reason,
                                        now)
                else:  # re-sent: answer again, the first "failed" may never have arrived
                    self.stats["duplicates"] += 1
                    self._notify(existing, now)
                return
            self.stats["skipped"] += 1
            log.warning("skipped malformed %s from %s (event seq=%s): %s",
                        exc.kind or "message", device_id, event.get("seq"), exc.reason)
            return
        if request is None:
            self.stats["ignored"] += 1
            log.debug("ignored telemetry seq=%s from %s: not an order message",
                      event.get("seq"), device_id)
            return
        if not isinstance(device_id, str) or not device_id:
            self.stats["skipped"] += 1
            log.warning("skipped order message seq=%s: event has no deviceId", event.get("seq"))
            return
        if isinstance(request, messages.StatusQuery):
            self.answer_status_query(device_id, request, now)
        elif isinstance(request, messages.OrderRequest):
            self._on_order_request(device_id, request, now)
        else:
            self._on_cancel_request(device_id, request, now)

    def _on_order_request(self, device_id, request, now):
        existing = self.store.find(device_id, request.request_id)
        if existing is not None:
            self.stats["duplicates"] += 1
            log.info("request %s from %s again: re-sending %s", request.request_id, device_id,
                     existing.status)
            self._notify(existing, now)
            return
        if self.bridge is not None:
            self._place_through_commerce(device_id, request, now)
            return
        try:
            document, amount = commerce.build_order(
                device_id, request, profile_from_row(self.store.profile(device_id)), self.catalogue)
        except commerce.Rejected as exc:
            self._record_failed(device_id, request.request_id, exc.reason, now)
            return
        order_id = self.store.allocate_order_id()
        document = dict(orderId=order_id, **document)
        next_status, next_due = self.timeline.next_step(lifecycle.ACCEPTED, now)
        order = self.store.insert_order(
            order_id, device_id, request.request_id, lifecycle.ACCEPTED, None, now, next_status,
            next_due, self.timeline.eta(now), amount, self.catalogue.currency, document, "device")
        self.stats["placed"] += 1
        log.info("placed %s for request %s from %s (%s x %s, %s %s)", order_id,
                 request.request_id, device_id, request.quantity, request.sku,
                 document["totals"]["grandTotal"], self.catalogue.currency)
        self._notify(order, now)

    def _place_through_commerce(self, device_id, request, now):
        """Queue the request for the commerce API (commerce_bridge); the device hears
        'accepted' once the commerce system has the order."""
        if self.bridge.request_place(self.store, device_id, request, now):
            log.info("request %s from %s queued for the commerce API (%s x %s)",
                     request.request_id, device_id, request.quantity, request.sku)
        else:
            self.stats["duplicates"] += 1
            log.info("request %s from %s again: still being placed", request.request_id,
                     device_id)

    def profile(self, device_id):
        return profile_from_row(self.store.profile(device_id))

    def record_failed(self, device_id, request_id, reason, now):
        if self.store.find(device_id, request_id) is None:
            self._record_failed(device_id, request_id, reason, now)

    def record_commerce_order(self, device_id, request_id, order_id, status, reason, eta,
                              amount, currency, document, now):
        """The commerce system has the order: store it and tell the device (its current
        status: after a crash the order may have moved on already)."""
        if self.store.find(device_id, request_id) is not None:
            return
        order = self.store.insert_order(order_id, device_id, request_id, status, reason, now,
                                        None, None, eta, amount, currency, document, "commerce")
        self.stats["placed"] += 1
        log.info("placed %s for request %s from %s through the commerce API", order_id,
                 request_id, device_id)
        self._notify(order, now)

    def apply_commerce_status(self, device_id, request_id, status, reason, now,
                              notify_reason=None):
        """A status the commerce system reports; False when it is not news (a duplicate or
        an out-of-order event)."""
        from host_tools.cloud.orders.commerce_bridge import newer
        order = self.store.find(device_id, request_id)
        if order is None or not newer(order.status, status):
            return False
        order = self.store.update_status(order.pk, status, reason, now, None, None, "commerce")
        if status == lifecycle.CANCELLED:
            self.stats["cancelled"] += 1
        log.info("%s (request %s) is %s%s", order.order_id, request_id, status,
                 f" ({reason})" if reason else "")
        self._notify(order, now, reason=notify_reason)
        return True

    def commerce_cancel_refused(self, device_id, request_id, status, reason, now):
        """The commerce system refused the cancel (the order has shipped, perhaps before its
        event reached us): the device gets the status it is in, with the refusal."""
        log.info("commerce refused the cancel of request %s: %s", request_id, reason)
        if not self.apply_commerce_status(device_id, request_id, status, None, now,
                                          notify_reason=lifecycle.CANCEL_REFUSED):
            self._notify(self.store.find(device_id, request_id), now,
                         reason=lifecycle.CANCEL_REFUSED)

    def cancel_locally(self, device_id, request_id, now):
        from host_tools.cloud.orders.messages import CancelRequest
        self._on_cancel_request(device_id, CancelRequest(request_id), now, local=True)

    def _record_failed(self, device_id, request_id, reason, now):
        """A request that could not become an order: remembered (so a re-send gets the same
        answer) with orderId ''."""
        order = self.store.insert_order("", device_id, request_id, lifecycle.FAILED, reason, now,
                                        None, None, None, None, None, {}, "device")
        self.stats["failed"] += 1
        log.info("request %s from %s failed: %s", request_id, device_id, reason)
        self._notify(order, now)

    def _on_cancel_request(self, device_id, request, now, local=False):
        order = self.store.find(device_id, request.request_id)
        if self.bridge is not None and not local:
            from host_tools.cloud.orders.commerce_bridge import is_commerce_order
            pending = self.bridge.pending(self.store, device_id, request.request_id)
            if pending or (order is not None and is_commerce_order(order)
                           and lifecycle.cancel_outcome(order.status) == lifecycle.CANCEL_APPLY):
                self.bridge.request_cancel(self.store, device_id, request.request_id, now)
                return
        if order is None:
            # The cancel overtook its order (or the order was lost): remember the request as
            # cancelled so that a late order request is answered, not placed. It gets an order
            # id because only `failed` may go to the device without one (firmware/app/README.md).
            # (With a commerce API its ids are the commerce system's: ours must not collide.)
            order_id = self.store.allocate_order_id("LOCAL" if self.bridge else "ORD")
            order = self.store.insert_order(
                order_id, device_id, request.request_id, lifecycle.CANCELLED,
                "cancelled before the order was placed", now, None, None, None, None, None, {},
                "device")
            self.stats["cancelled"] += 1
            self._notify(order, now)
            return
        self._cancel(order, now, "device")

    # -- reconciliation ------------------------------------------------------------------
    def answer_status_query(self, device_id, query, now):
        """A statusQuery (firmware/app/README.md, "Messages on the wire"): the latest status of
        each listed request of this device goes out again as an ordinary orderStatus C2D, in
        the same transaction as the batch's cursors (a replayed query answers again; the device
        counts that as a duplicate). An id with no order of this device (never seen, or
        another device's) gets no answer: it is counted and logged, nothing else."""
        self.stats["queries"] += 1
        for request_id in query.request_ids:
            order = self.store.find(device_id, request_id)
            if order is None:
                self.stats["unanswered"] += 1
                if self.bridge is not None and self.bridge.pending(self.store, device_id,
                                                                   request_id):
                    log.info("status query from %s for request %s: still being placed through "
                             "the commerce API (its status follows)", device_id, request_id)
                    continue
                log.info("status query from %s for request %s: no such order of that device",
                         device_id, request_id)
                continue
            self.stats["answers"] += 1
            self._notify(order, now)

    # -- status changes ------------------------------------------------------------------
    def _cancel(self, order, now, source):
        """Cancel before shipment. A device whose cancel cannot apply gets the current status
        back (with the refusal reason after shipment); an operator gets only the outcome."""
        outcome = lifecycle.cancel_outcome(order.status)
        if outcome == lifecycle.CANCEL_APPLY:
            order = self._move(order, lifecycle.CANCEL, now, source)
            self.stats["cancelled"] += 1
        elif source == "device":
            if outcome == lifecycle.CANCEL_REFUSE:
                log.info("refused cancel of %s: already %s", order.order_id, order.status)
                self._notify(order, now, reason=lifecycle.CANCEL_REFUSED)
            else:
                self._notify(order, now)
        return order, outcome

    def _move(self, order, event, now, source, reason=None):
        """Apply one lifecycle event (ADVANCE, CANCEL, FAIL) and queue the new status."""
        status = lifecycle.transition(order.status, event)
        if status == lifecycle.PAYMENT_AUTHORIZED:
            declined = commerce.authorize_payment(order.document)
            if declined:
                status, reason = lifecycle.transition(order.status, lifecycle.FAIL), declined
        if status in lifecycle.TERMINAL:
            next_status, next_due = None, None
        else:
            next_status, next_due = self.timeline.next_step(status, order.placed_at)
        order = self.store.update_status(order.pk, status, reason, now, next_status, next_due,
                                         source)
        log.info("%s (request %s) is %s%s", order.order_id, order.request_id, status,
                 f" ({reason})" if reason else "")
        self._notify(order, now)
        return order

    def _notify(self, order, now, reason=None):
        eta = order.eta if order.status not in lifecycle.TERMINAL else None
        body = messages.status_body(order.request_id, order.order_id, order.status,
                                    reason if reason is not None else order.reason, eta)
        self.store.enqueue(order.device_id, self.new_message_id(), order.request_id,
                           messages.encode(body), now)

    def run_due(self):
        """Move every order whose timeline step is due at clock(); returns the steps taken."""
        steps = 0
        while True:
            with self.store.transaction():
                now = self.clock()
                batch = self.store.due(now, _DUE_BATCH)
                for order in batch:
                    self._move(order, lifecycle.ADVANCE, now, "timeline")
            steps += len(batch)
            if not batch:
                return steps

    def wake(self):
        """Called from another thread (the commerce webhook) after it committed statuses to
        the outbox: end the loop's wait for telemetry now, when the hub client can (else the
        statuses go out within one poll timeout)."""
        wake = getattr(self.client, "wake", None)
        if wake is not None:
            wake()

    def next_wakeup(self):
        due = self.store.next_due()
        if self.bridge is not None:
            work = self.bridge.next_wakeup(self.store)
            if work is not None:
                due = work if due is None else min(due, work)
        return due

    # -- operator commands (CLI) ---------------------------------------------------------
    def resolve(self, key):
        found = self.store.lookup(key)
        if not found:
            raise NotFound(key)
        if len(found) > 1:
            raise Ambiguous(key, found)
        return found[0]

    def advance(self, key, to=None):
        """Move an order on by hand: one step, or through every step up to `to`."""
        with self.store.transaction():
            now = self.clock()
            order = self._local(self.resolve(key))
            target = to or lifecycle.next_progress(order.status)
            if target is None:
                raise lifecycle.IllegalTransition(order.status, lifecycle.ADVANCE)
            for _ in lifecycle.path_to(order.status, target):
                order = self._move(order, lifecycle.ADVANCE, now, "operator")
                if order.status == lifecycle.FAILED:
                    break
            return order

    def cancel(self, key):
        """Cancel by hand; returns (order, outcome) with lifecycle.CANCEL_* as outcome."""
        with self.store.transaction():
            return self._cancel(self._local(self.resolve(key)), self.clock(), "operator")

    @staticmethod
    def _local(order):
        from host_tools.cloud.orders.commerce_bridge import is_commerce_order
        if is_commerce_order(order):
            raise CommerceOwned(order)
        return order

    # -- hub I/O -------------------------------------------------------------------------
    def _hub(self):
        if self.client is None:
            if self.connect is None:
                raise RuntimeError("no hub connection configured")
            client = self.connect()
            try:
                client.start(self._start_cursors(client))
            except BaseException:
                client.close()
                raise
            self.client = client
        return self.client

    def _drop_client(self):
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def _start_cursors(self, client):
        """Where to read each partition from. A partition whose newest event is older than our
        cursor has lost its data (a hub with a new data folder): read it from the start, or
        its events would never be seen."""
        cursors = self.store.cursors()
        start, reset = {}, {}
        for partition, info in client.partition_info.items():
            cursor = cursors.get(partition, -1)
            if cursor > info["last_enqueued_sequence_number"]:
                log.warning("partition %s of the hub ends at %s but our cursor is at %s: the hub's "
                            "data was reset, reading that partition from the start", partition,
                            info["last_enqueued_sequence_number"], cursor)
                cursor = reset[partition] = -1
            start[partition] = cursor
        if reset:
            with self.store.transaction():
                self.store.set_cursors(reset)
        return start

    def poll(self, timeout):
        """Take the telemetry that arrived (waiting up to `timeout`); returns how many events
        were handled. Events at or before a partition's cursor (fetched again after a
        reconnect) are dropped here, so each is handled once."""
        events, cursors = self._hub().next_events(timeout)
        if not events:
            return 0
        known = self.store.cursors()
        fresh = [e for e in events if e["sequence"] > known.get(e["partition"], -1)]
        self.handle_events(fresh, cursors)
        return len(fresh)

    def flush(self):
        """Send the outbox, a batch at a time (pipelined); a message leaves the outbox once the
        hub has accepted it. A device whose message was refused gets nothing more this turn;
        messages to it already in the same batch went out (the device ranks statuses).
        Accepted messages are deleted in the next transaction (handle_events, forget_sent)."""
        return self._send_from(0, set())

    def _send_from(self, after, blocked):
        sent, full = 0, True
        while full:
            started, after, full = self._begin_send(after, blocked)
            if started:
                sent += self._end_send(started, blocked)
        return sent

    def _begin_send(self, after=0, blocked=(), limit=_OUTBOX_BATCH):
        """Put the outbox messages after id `after` (up to `limit`) on the link without waiting
        for the hub's answers. Returns (started: (batch, handle), or None when there was nothing
        to send; the last id looked at; whether there may be more after it)."""
        from host_tools.cloud.azure.client import C2d
        HubUnavailable, _ = hub_errors()
        rows = self.store.pending(limit, after, blocked)
        if not rows:
            return None, after, False
        after, full = rows[-1]["id"], len(rows) >= limit
        batch = [m for m in rows if m["device_id"] not in blocked and m["id"] not in self._sent]
        if not batch:
            return None, after, full
        items = [C2d(m["device_id"], m["body"], m["message_id"], m["correlation_id"],
                     messages.CONTENT_TYPE, messages.CONTENT_ENCODING,
                     dict(messages.C2D_PROPERTIES), self.c2d_ttl) for m in batch]
        try:
            return (batch, self._hub().begin_c2d(items)), after, full
        except HubUnavailable:
            self._drop_client()
            raise

    def _end_send(self, started, blocked):
        """The hub's answers to what _begin_send sent; returns how many it accepted."""
        HubUnavailable, ServiceError = hub_errors()
        batch, handle = started
        try:
            results = self._hub().finish_c2d(handle)
        except HubUnavailable:
            self._drop_client()
            raise
        if any(isinstance(r, ServiceError) and r.status == 401 for r in results):
            self._drop_client()  # a new service key: reconnect, keep the messages
            raise next(r for r in results if isinstance(r, ServiceError) and r.status == 401)
        sent, lost, refused = 0, None, []
        for message, error in zip(batch, results):
            if error is None:
                self._sent[message["id"]] = True
                sent += 1
            elif isinstance(error, HubUnavailable):
                lost = error        # no answer: it stays in the outbox as it was
            else:
                refused.append((message, error))
        if refused:
            with self.store.transaction():
                for message, error in refused:
                    self._refused(message, error, blocked)
        self.stats["sent"] += sent
        if lost is not None:
            self._drop_client()
            raise lost
        return sent

    def _refused(self, message, exc, blocked):
        device_id = message["device_id"]
        if _give_up(exc.status, message["attempts"] + 1, self.max_attempts):
            log.error("dropped a status for %s (%s): the hub answered %s", device_id,
                      message["body"], exc)
            self.store.delivered(message["id"])
            return
        if message["attempts"] == 0:
            why = {403: "its C2D queue is full (the device is offline or slow)",
                   429: "the hub is throttling"}.get(exc.status, "the hub refused it")
            log.warning("status for %s not accepted, %s; will retry: %s", device_id, why, exc)
        self.store.attempt_failed(message["id"], str(exc))
        blocked.add(device_id)

    def step(self, timeout=0.0):
        """One turn of the loop: put the outbox on the link, and while the hub stores and
        delivers those messages, take the telemetry that is already there and commit its batch;
        then read the hub's answers (so a hub outage right after never makes us send an accepted
        message again), and if no telemetry had come, wait for it (up to `timeout`). Then run the
        timeline (and the commerce bridge). The statuses this turn made go out at the start of
        the next one, which the serve loop begins at once. What the hub accepted is deleted from
        the outbox with the next batch of events, or at the end of a turn that had none."""
        blocked = set()
        started, after, full = self._begin_send(0, blocked, _STEP_SEND)
        events = self.poll(0.0 if started else timeout)
        if started:
            self._end_send(started, blocked)
            if not events:
                events = self.poll(timeout)
        if full:    # a long outbox (after an outage): the rest, a batch at a time
            self._send_from(after, blocked)
        self.run_due()
        if self.bridge is not None:
            self.flush()
            self.bridge.run(self)
            self.flush()
        if not events:
            self.forget_sent()

    def serve(self, stop=None, poll_timeout=1.0):
        """Run until `stop` (a threading.Event) is set. Nothing here ends the loop but `stop`:
        a hub outage (or any other failure) is logged once and retried with backoff, and the
        transactions guarantee a failed turn left nothing half done."""
        HubUnavailable, ServiceError = hub_errors()
        stop = stop or threading.Event()
        backoff, trouble = 0.2, None
        while not stop.is_set():
            try:
                wait = poll_timeout
                due = self.next_wakeup()
                if due is not None:
                    wait = max(0.0, min(wait, due - self.clock()))
                self.step(wait)
                if trouble:
                    log.warning("recovered from: %s", trouble)
                backoff, trouble = 0.2, None
                continue
            except (HubUnavailable, ServiceError, OSError) as exc:
                problem = f"hub: {exc}"
                if trouble is None:
                    log.warning("%s; retrying", problem)
            except Exception as exc:  # a bug or storage failure: keep serving, loudly
                problem = f"{type(exc).__name__}: {exc}"
                log.exception("order service turn failed; retrying")
            self._drop_client()
            trouble = problem
            stop.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)
        try:
            self.forget_sent()  # stopping: what the hub accepted is not sent again at the next start
        except Exception:
            log.exception("could not clear the sent statuses from the outbox; they go out again")
