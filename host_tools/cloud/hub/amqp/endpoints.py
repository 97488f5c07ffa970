"""What the hub's AMQP endpoints do, as a proton engine event handler (one per connection).

    $cbs                                put-token: a SAS token for IoT Hub or the event hub
    $management                         READ com.microsoft:eventhub / com.microsoft:partition
    {hub}/ConsumerGroups/{g}/Partitions/{n}   telemetry, from the durable log (server sends)
    /messages/devicebound               C2D send into the hub's C2D queue (server receives)
    /messages/servicebound/feedback     C2D feedback batches (server sends, client accepts)
"""
import json
import logging
import time
import uuid

from proton import Condition, Delivery, Message, int32, symbol, timestamp, ulong  # noqa: F401
from proton import Event

from host_tools.cloud.hub.amqp import eventlog, feedback, rules

log = logging.getLogger("host_tools.cloud.hub.amqp")

CBS, MANAGEMENT = "$cbs", "$management"
DEVICEBOUND, FEEDBACK = "messages/devicebound", "messages/servicebound/feedback"
SELECTOR = symbol("apache.org:selector-filter:string")
CREDIT = 100
SEND_BATCH = 200


def _text(v):
    if isinstance(v, (bytes, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    return None if v is None else str(v)


def _ms(seconds):
    return timestamp(int(seconds * 1000))


class Endpoints:
    """State of one AMQP connection: its authorizations and its links."""

    def __init__(self, server, conn_id):
        self.server = server
        self.hub = server.hub
        self.id = conn_id
        self.auth = []           # [(kind, rights, expiry)] from accepted put-tokens
        self.replies = {}        # server sender link -> [Message] waiting for credit
        self.receivers = {}      # server sender link -> [partition, after_pseq] (event hub readers)
        self.feedback_links = {}  # server sender link -> {delivery tag: feedback id}
        self.on_output = None     # the connection's process(): sends what became pending
        self.is_closed = False

    # ---- authorization ---------------------------------------------------------------------
    def authorized(self, kind, right=rules.SERVICE_CONNECT):
        now = time.time()
        return any(k == kind and right in rights and exp > now for k, rights, exp in self.auth)

    def _put_token(self, msg):
        props = msg.properties or {}
        name = _text(props.get("name")) or ""
        token = _text(msg.body) or ""
        kind = "eventhub" if name.lower().startswith(("sb://", "amqps://")) else "iothub"
        try:
            if _text(props.get("operation")) != "put-token":
                raise rules.Refused("amqp:not-implemented", "unsupported $cbs operation", 400)
            rights, expiry = rules.check_token(
                token, self.server.policy_keys(), self.hub.host_names(), time.time(),
                entity=self.server.eventhub["name"] if kind == "eventhub" else None)
            if rules.SERVICE_CONNECT not in rights:
                raise rules.Refused("amqp:unauthorized-access",
                                    "Unauthorized: the policy lacks the ServiceConnect permission")
        except rules.Refused as exc:
            log.info("amqp %s: put-token for %s refused: %s", self.id, name, exc.description)
            return exc.status, exc.description
        self.auth.append((kind, rights, expiry))
        return 200, "OK"

    # ---- proton events -----------------------------------------------------------------------
    def handle(self, event):
        t = event.type
        if t == Event.CONNECTION_REMOTE_OPEN:
            event.connection.container = "local-iothub"
            event.connection.open()
        elif t == Event.SESSION_REMOTE_OPEN:
            event.session.open()
        elif t == Event.LINK_REMOTE_OPEN:
            self._attach(event.link)
        elif t == Event.LINK_FLOW:
            self.pump_link(event.link)
        elif t == Event.DELIVERY:
            self._delivery(event.delivery)
        elif t == Event.LINK_REMOTE_CLOSE:
            self._forget(event.link)
            event.link.close()
        elif t == Event.SESSION_REMOTE_CLOSE:
            event.session.close()
        elif t == Event.CONNECTION_REMOTE_CLOSE:
            event.connection.close()

    def _forget(self, link):
        self.replies.pop(link, None)
        self.receivers.pop(link, None)
        tokens = self.feedback_links.pop(link, None)
        if tokens:      # a feedback link closed with batches unsettled: visible again at once
            feedback.release(self.hub.store, list(tokens))
            self.server.feedback_changed()

    def _refuse(self, link, condition, description):
        log.info("amqp %s: link %s refused: %s", self.id, link.name, description)
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.open()
        link.condition = Condition(condition, description)
        link.close()

    def _attach(self, link):
        if link.is_sender:      # the client receives from remote_source
            address = link.remote_source.address or ""
        else:
            address = link.remote_target.address or ""
        path = rules.entity_path(address)
        if path in (CBS.lower(), MANAGEMENT.lower()):
            pass
        elif link.is_receiver and path == DEVICEBOUND:
            if not self.authorized("iothub"):
                return self._refuse(link, "amqp:unauthorized-access", "put a token with ServiceConnect on $cbs first")
        elif link.is_sender and path == FEEDBACK:
            if not self.authorized("iothub"):
                return self._refuse(link, "amqp:unauthorized-access", "put a token with ServiceConnect on $cbs first")
            self.feedback_links[link] = {}
        elif link.is_sender and rules.parse_receiver_address(address):
            try:
                self.receivers[link] = self._open_reader(link, address)
            except rules.Refused as exc:
                return self._refuse(link, exc.condition, exc.description)
        else:
            return self._refuse(link, "amqp:not-found", "no entity at %r" % address)
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.open()
        if link.is_receiver:
            link.flow(CREDIT)
        else:
            self.replies.setdefault(link, [])
            self.pump_link(link)

    def _open_reader(self, link, address):
        hub_name, group, partition = rules.parse_receiver_address(address)
        eh = self.server.reload_eventhub()
        if hub_name.lower() != eh["name"].lower():
            raise rules.Refused("amqp:not-found", "The messaging entity '%s' could not be found." % hub_name)
        if not self.authorized("eventhub"):
            raise rules.Refused("amqp:unauthorized-access", "Unauthorized: put a token with the Listen claim on $cbs first")
        if not any(g.lower() == group.lower() for g in eh["consumerGroups"]):
            raise rules.Refused("amqp:not-found", "The messaging entity '%s/ConsumerGroups/%s' could not be found."
                                % (hub_name, group))
        if not (partition.isdigit() and int(partition) < eh["partitions"]):
            raise rules.Refused("amqp:argument-out-of-range",
                                "The specified partition is invalid for an EventHub partition sender or receiver. "
                                "It should be between 0 and %d." % (eh["partitions"] - 1))
        p = int(partition)
        selector = ("offset", False, -1)
        filters = _filters(link.remote_source)
        if SELECTOR in filters:
            selector = rules.parse_selector(_text(filters[SELECTOR]))
        if selector[0] == "sequence-number":
            # Event Hubs refuses a sequence number past the partition's last one (inclusive or
            # not), with this text; at the last one it attaches and waits (README: Event Hubs-
            # compatible endpoint)
            last = eventlog.last_pseq(self.hub.store, p)
            if selector[2] > last:
                raise rules.Refused("com.microsoft:argument-error",
                                    "The supplied sequence number '%d' is invalid. The last sequence "
                                    "number in the system is '%d'" % (selector[2], last), 400)
        after = eventlog.start_after(self.hub.store, p, selector)
        log.info("amqp %s: reader on partition %d of %s from %s", self.id, p, group, selector)
        return [p, after]

    def _delivery(self, dlv):
        link = dlv.link
        if link.is_sender:
            if dlv.remote_state or dlv.settled:
                self._sent_settled(link, dlv)
            return
        if dlv.partial or not dlv.readable:
            return
        data = link.recv(dlv.pending)
        link.advance()
        msg = Message()
        try:
            msg.decode(data)
        except Exception as exc:
            return self._reject(dlv, "amqp:decode-error", "cannot decode the message: %s" % exc)
        address = rules.entity_path(link.remote_target.address or "")
        if address == CBS.lower():
            status, description = self._put_token(msg)
            self._reply(link.connection, CBS, msg, status, description)
            self._accept(dlv)
        elif address == MANAGEMENT.lower():
            self._management(link.connection, msg)
            self._accept(dlv)
        elif address == DEVICEBOUND:
            self._c2d(dlv, msg)
        else:
            self._reject(dlv, "amqp:not-allowed", "this link does not take messages")
        if link.credit < CREDIT // 2:
            link.flow(CREDIT - link.credit)

    @staticmethod
    def _accept(dlv):
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()

    @staticmethod
    def _reject(dlv, condition, description):
        dlv.local.condition = Condition(condition, description)
        dlv.update(Delivery.REJECTED)
        dlv.settle()

    # ---- replies ($cbs, $management) ---------------------------------------------------------
    def _reply(self, connection, node, request, status, description, body=None):
        reply = Message(body=body, correlation_id=request.id, address=request.reply_to)
        reply.properties = {"status-code": int32(status), "status-description": description,
                            "statusCode": int32(status), "statusDescription": description}
        target = None
        for link in self.replies:
            src = (link.remote_source.address or "").lower()
            tgt = (link.remote_target.address or "")
            if request.reply_to and tgt == request.reply_to:
                target = link
                break
            if src == node.lower() and target is None:
                target = link
        if target is None:
            log.info("amqp %s: no link to answer a %s request on", self.id, node)
            return
        self.replies[target].append(reply)
        self.pump_link(target)

    def _management(self, connection, msg):
        props = msg.properties or {}
        op, kind = _text(props.get("operation")), _text(props.get("type"))
        eh = self.server.reload_eventhub()
        token = _text(props.get("security_token"))
        try:
            if token:
                rights, _ = rules.check_token(token, self.server.policy_keys(), self.hub.host_names(),
                                              time.time(), entity=eh["name"])
                if rules.SERVICE_CONNECT not in rights:
                    raise rules.Refused("amqp:unauthorized-access", "Unauthorized: the policy lacks ServiceConnect")
            elif not self.authorized("eventhub"):
                raise rules.Refused("amqp:unauthorized-access", "Unauthorized: no token")
            if op != "READ":
                raise rules.Refused("amqp:not-implemented", "unsupported operation %r" % op, 400)
            if (_text(props.get("name")) or "").lower() != eh["name"].lower():
                raise rules.Refused("amqp:not-found", "The messaging entity '%s' could not be found."
                                    % _text(props.get("name")), 404)
            if kind == "com.microsoft:eventhub":
                body = {"name": eh["name"], "type": kind, "created_at": _ms(eh["created"]),
                        "partition_count": int32(eh["partitions"]),
                        "partition_ids": [str(i) for i in range(eh["partitions"])]}
            elif kind == "com.microsoft:partition":
                part = _text(props.get("partition")) or ""
                if not (part.isdigit() and int(part) < eh["partitions"]):
                    raise rules.Refused("amqp:argument-out-of-range", "no partition %r" % part, 400)
                info = eventlog.partition_info(self.hub.store, int(part))
                body = {"name": eh["name"], "type": kind, "partition": part,
                        "begin_sequence_number": info["begin"],
                        "last_enqueued_sequence_number": info["last_seq"],
                        "last_enqueued_offset": info["last_offset"],
                        "last_enqueued_time_utc": timestamp(info["last_time_ms"]),
                        "is_partition_empty": info["empty"]}
            else:
                raise rules.Refused("amqp:not-implemented", "unsupported type %r" % kind, 400)
        except rules.Refused as exc:
            return self._reply(connection, MANAGEMENT, msg, exc.status, exc.description)
        self._reply(connection, MANAGEMENT, msg, 200, "OK", body)

    # ---- sending (replies, telemetry, feedback) -------------------------------------------------
    def pump(self):
        """Send what waits on every sending link (called when the hub has news)."""
        for link in list(self.replies):
            self.pump_link(link)

    def pump_link(self, link):
        if not link.is_sender or link not in self.replies:
            return
        queue = self.replies[link]
        while queue and link.credit > 0:
            self._send(link, queue.pop(0).encode(), settled=True)
        if link in self.receivers:
            state = self.receivers[link]
            while link.credit > 0:
                rows = eventlog.read(self.hub.store, state[0], state[1], min(link.credit, SEND_BATCH))
                if not rows:
                    break
                for row in rows:
                    self._send(link, event_message(row).encode(), settled=True)
                    state[1] = row["pseq"]
        elif link in self.feedback_links:
            pending = self.feedback_links[link]
            if link.credit > 0:
                # each batch sent is locked for this reader (feedback.py); the tag is its lock token
                for fid, token, mid, created, body in feedback.take(
                        self.hub.store, "amqp", limit=link.credit, lock_seconds=self.server.feedback_lock):
                    msg = feedback_message(mid, created, body, self.server.hub_name())
                    self._send(link, msg.encode(), settled=False, tag=token)
                    pending[token] = fid

    def _send(self, link, data, settled, tag=None):
        tag = tag or str(uuid.uuid4())
        dlv = link.delivery(tag)
        link.send(data)
        link.advance()
        if settled:
            dlv.settle()
        return tag

    def _sent_settled(self, link, dlv):
        pending = self.feedback_links.get(link)
        fid = pending.pop(dlv.tag, None) if pending is not None else None
        if fid is not None:
            settle = {Delivery.ACCEPTED: feedback.completed, Delivery.REJECTED: feedback.rejected,
                      Delivery.RELEASED: feedback.abandoned, Delivery.MODIFIED: feedback.abandoned
                      }.get(dlv.remote_state)
            if settle is None:      # settled with no outcome: as if never sent
                feedback.release(self.hub.store, [dlv.tag])
            elif not settle(self.hub.store, fid, dlv.tag):
                log.info("amqp %s: feedback message settled after its lock expired: nothing changed", self.id)
            if settle in (None, feedback.abandoned):
                self.server.feedback_changed()
        dlv.settle()

    def closed(self):
        self.is_closed = True
        tokens = [t for pending in self.feedback_links.values() for t in pending]
        if tokens:      # the batches this connection held are visible again at once
            feedback.release(self.hub.store, tokens)
            self.server.feedback_changed()
        self.feedback_links.clear()
        self.receivers.clear()
        self.replies.clear()

    # ---- C2D ---------------------------------------------------------------------------------
    def _c2d(self, dlv, msg):
        from host_tools.cloud.hub.store import StoreError
        device_id = rules.c2d_device(msg.address)
        if device_id is None:
            return self._reject(dlv, "amqp:invalid-field",
                                "the 'to' property must be /devices/{deviceId}/messages/devicebound")
        body = msg.body
        if isinstance(body, str):
            body = body.encode()
        elif isinstance(body, memoryview):
            body = bytes(body)
        elif not isinstance(body, bytes):
            body = b"" if body is None else json.dumps(body).encode()
        app = {str(k): ("" if v is None else _text(v)) for k, v in (msg.properties or {}).items()}
        ack = app.pop("iothub-ack", None)
        if ack is not None and ack not in ("none", "positive", "negative", "full"):
            return self._reject(dlv, "amqp:invalid-field", "iothub-ack must be none, positive, negative or full")
        ttl = None
        if msg.expiry_time:
            ttl = max(1, int(round(msg.expiry_time - time.time())))
        try:
            _, durable = self.hub.send_c2d_grouped(
                device_id, body, message_id=_text(msg.id) or None,
                correlation_id=_text(msg.correlation_id) or None,
                content_type=_text(msg.content_type) or None,
                content_encoding=_text(msg.content_encoding) or None,
                properties=app, ttl=ttl, ack=ack)
        except StoreError as exc:
            return self._refuse_c2d(dlv, device_id, exc)
        # accepted only once committed (group_commit.py); the sender pipelines meanwhile
        durable.add_done_callback(lambda f: self._settle_later(dlv, device_id, f))

    def _refuse_c2d(self, dlv, device_id, exc):
        condition, description = {
            404: ("amqp:not-found", "Device %s not found" % device_id),
            403: ("amqp:resource-limit-exceeded", "Device Queue depth cannot exceed 50 messages"),
            413: ("amqp:link:message-size-exceeded", "Message size cannot exceed 65536 bytes"),
        }.get(exc.status, ("amqp:invalid-field", str(exc)))
        log.info("amqp %s: C2D to %s refused: %s", self.id, device_id, description)
        return self._reject(dlv, condition, description)

    def _settle_later(self, dlv, device_id, fut):
        from host_tools.cloud.hub.store import StoreError
        exc = fut.exception() if not fut.cancelled() else RuntimeError("cancelled")
        if self.is_closed:
            return      # no outcome reached the sender: it sends again, with the same message id
        if exc is None:
            self._accept(dlv)
        elif isinstance(exc, StoreError):
            self._refuse_c2d(dlv, device_id, exc)
        else:
            log.error("amqp %s: C2D not stored: %s", self.id, exc)
            self._reject(dlv, "amqp:internal-error", "the message could not be stored")
        if self.on_output is not None:
            self.on_output()


def _filters(terminus):
    data = terminus.filter
    data.rewind()
    if not data.next():
        return {}
    try:
        value = data.get_object()
    except Exception:
        return {}
    if not isinstance(value, dict):
        return {}
    out = {}
    for k, v in value.items():
        out[symbol(str(k))] = getattr(v, "value", v)
    return out


def event_message(row):
    """One stored telemetry row as IoT Hub routes it to the built-in endpoint."""
    system = json.loads(row["system_props"])
    app = json.loads(row["app_props"])
    device_id = row["device_id"]
    msg = Message(body=bytes(row["body"]), inferred=True)
    enqueued = _ms(row["enqueued"])
    msg.annotations = {
        symbol("x-opt-sequence-number"): row["pseq"],
        symbol("x-opt-offset"): str(row["seq"]),
        symbol("x-opt-enqueued-time"): enqueued,
        symbol("iothub-connection-device-id"): device_id,
        symbol("iothub-connection-auth-method"):
            '{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}',
        symbol("iothub-connection-auth-generation-id"): "",
        symbol("iothub-enqueuedtime"): enqueued,
        symbol("iothub-message-source"): "Telemetry",
    }
    if system.get("messageId"):
        msg.id = system["messageId"]
    if system.get("correlationId"):
        msg.correlation_id = system["correlationId"]
    if system.get("contentType"):
        msg.content_type = symbol(system["contentType"])
    if system.get("contentEncoding"):
        msg.content_encoding = symbol(system["contentEncoding"])
    if system.get("userId"):
        msg.user_id = system["userId"].encode()
    msg.properties = {str(k): ("" if v is None else v) for k, v in app.items()} or None
    return msg


def feedback_message(message_id, created, body, hub_name):
    """One batch of feedback records as IoT Hub sends it: the docs' EnqueuedTime (the annotation
    the Azure SDKs read it from), UserId (the hub's name) and content type; the body is the
    JSON array of records."""
    msg = Message(body=bytes(body), inferred=True, id=message_id, user_id=hub_name.encode(),
                  content_type=symbol(feedback.CONTENT_TYPE))
    msg.address = "/messages/servicebound/feedback"
    msg.annotations = {symbol("iothub-enqueuedtime"): _ms(created)}
    return msg
