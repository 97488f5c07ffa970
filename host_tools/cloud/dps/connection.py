"""One device's MQTT connection to the local DPS, on the hub's connection plumbing, so the broker
handles it like a hub connection (subscribe, publish, close) while the hub keeps it out of its
device connections."""
import asyncio
import json
import logging

from firmware.iothub.topics import TopicError
from host_tools.cloud.dps import topics
from host_tools.cloud.dps.service import error_body
from host_tools.cloud.hub.hub import Connection

log = logging.getLogger("host_tools.cloud.dps")


class DpsConnection(Connection):
    registry = False   # not a device of the hub: never in hub.connections

    def __init__(self, dps, scope, reg_id, token):
        super().__init__(dps.hub, reg_id, float("inf"), True)
        self.dps = dps
        self.scope = scope
        self.token = token

    def started(self):
        pass   # no expiry timer (the token is checked per request), no C2D

    def on_subscribe(self, requested):
        for topic_filter, _qos in requested:
            if not topics.allowed_filter(topic_filter):
                self.close("DPS subscribe to a topic it may not use: %s" % topic_filter)
                return None
        self.subscriptions.update(f for f, _ in requested)
        return [min(q, 1) for _, q in requested]

    def after_subscribe(self):
        pass

    def on_unsubscribe(self, filters):
        self.subscriptions.difference_update(filters)

    async def on_publish(self, topic, data, retain=False):   # RETAIN means nothing to DPS
        try:
            req = topics.parse_publish(topic)
        except TopicError as exc:
            self.close("malformed DPS topic: %s" % exc)
            return False
        if req is None:
            self.close("DPS publish to a topic it may not use: %s" % topic)
            return False
        try:
            if req[0] == "register":
                status, body, retry = self.dps.register(self.scope, self.device_id, self.token, data)
            else:
                status, body, retry = self.dps.operation_status(self.scope, self.device_id,
                                                                self.token, req[2])
        except Exception:
            log.exception("%s: DPS request failed", self.device_id)
            status, body, retry = 500, error_body(500, "Internal error"), None
        # answered after the PUBACK (the handler sends that when this returns), as DPS does
        self._tasks.append(asyncio.ensure_future(
            self.send(topics.response(status, req[1], retry), json.dumps(body).encode())))
        return True
