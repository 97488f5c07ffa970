"""Event Grid's side of the webhook: the subscription validation handshake and the delivery
of queued events, retried with backoff until the endpoint acknowledges them.

Deliveries live in SQLite (store.deliveries), written in the same transaction as the status
change, so an event owed survives kill -9 and is sent after the restart. Each subscription's
events go out oldest first, one event per request; one that fails holds back the ones behind
it until it is acknowledged (or dead-lettered on 400/401/403/413, as Event Grid does).
"""
import asyncio
import logging
import uuid

import aiohttp

from host_tools.cloud.commerce import eventgrid

log = logging.getLogger("host_tools.cloud.commerce")


class ValidationFailed(Exception):
    pass


async def _post(session, url, kind, name, count, payload, timeout):
    async with session.post(url, json=payload, headers=eventgrid.headers(kind, name, count),
                            timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        text = await resp.text()
        return resp.status, text


async def validate(session, name, endpoint, topic, now, timeout=30.0):
    """The SubscriptionValidationEvent handshake: the endpoint must echo the code back."""
    code = str(uuid.uuid4())
    try:
        status, text = await _post(session, endpoint, eventgrid.SUBSCRIPTION_VALIDATION, name, 0,
                                   [eventgrid.validation_event(topic, code, now)], timeout)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise ValidationFailed(f"webhook {endpoint} did not answer the validation handshake: "
                               f"{type(exc).__name__}: {exc}") from None
    if status != 200:
        raise ValidationFailed(f"webhook {endpoint} answered the validation handshake with "
                               f"HTTP {status}")
    try:
        import json
        answer = json.loads(text)
    except ValueError:
        answer = None
    if eventgrid.validation_code_from(answer) != code:
        raise ValidationFailed(f"webhook {endpoint} did not echo the validation code")


class Deliverer:
    def __init__(self, store, clock, retry_base=1.0, retry_max=30.0, timeout=10.0):
        self.store, self.clock = store, clock
        self.retry_base, self.retry_max, self.timeout = retry_base, retry_max, timeout
        self.stats = {"delivered": 0, "retried": 0, "dead": 0}

    async def deliver_due(self, session):
        """Try the head delivery of each subscription that is due; returns how many went."""
        done = 0
        for head in self.store.heads():
            if head.next_attempt > self.clock():
                continue
            done += await self._try(session, head)
        return done

    async def _try(self, session, head):
        try:
            status, text = await _post(session, head.endpoint, eventgrid.NOTIFICATION,
                                       head.subscription, head.attempts, [head.event],
                                       self.timeout)
            error = None if 200 <= status < 300 else f"HTTP {status}: {text[:200]}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"
        result = eventgrid.outcome(status)
        now = self.clock()
        with self.store.transaction():
            if result == "delivered":
                self.store.delivery_done(head.id, "delivered", now)
            elif result == "dead":
                self.store.delivery_done(head.id, "dead", now, error)
            else:
                delay = eventgrid.retry_delay(head.attempts + 1, self.retry_base, self.retry_max)
                self.store.delivery_failed(head.id, error, now + delay)
        if result == "delivered":
            self.stats["delivered"] += 1
            return 1
        if result == "dead":
            self.stats["dead"] += 1
            log.error("dead-lettered %s for %s: %s", head.event["eventType"],
                      head.subscription, error)
            return 1
        self.stats["retried"] += 1
        if head.attempts == 0:
            log.warning("delivery of %s to %s failed, retrying with backoff: %s",
                        head.event["eventType"], head.subscription, error)
        return 0

    def next_wakeup(self):
        heads = self.store.heads()
        return min((h.next_attempt for h in heads), default=None)
