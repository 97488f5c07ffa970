"""C2D feedback: records derived from the C2D queue's final states, batched into feedback
messages as IoT Hub batches them (durable, same SQLite file).

A message sent with iothub-ack positive/full gets a "Success" record when the device completes
it; negative/full get "Expired" when its TTL passes, "DeliveryCountExceeded" when it is
dead-lettered after too many abandons, "Rejected" when a device rejects it (MQTT devices cannot)
and "Purged" when its queue is purged (the service's purge, or a CleanSession=1 connect).

The docs: "Whenever possible, message feedback is batched in a single message ... The system
sends out the feedback either when the batch reaches to 64 messages, or in 15 seconds from last
sent, whichever comes first." So a record waits, unbatched, until 64 are pending (a batch of 64
is closed at once) or until `window` seconds (15) have passed since the last batch was closed
(all pending ones, up to 64, go in one batch); after a quiet period the first record goes out at
the next sweep. A batch is one feedback message whose body is the JSON array of its records; it
stays queued until a receiver accepts it, as IoT Hub's feedback queue does with its defaults:
a batch no receiver accepted within TTL (1 hour) expires, one abandoned (released or modified)
MAX_DELIVERY (10) times or rejected is dead-lettered. Records of a device deleted before they
were batched are dropped (the docs: "When a device is deleted, any pending feedback is deleted as
well"). Records and batches are rows of the hub's database, written in the sweep's transaction:
a hub restart loses none.

One queue, two ways to read it: over AMQP (/messages/servicebound/feedback) and over HTTPS
(GET /messages/serviceBound/feedback, service_api.py). Either way a batch handed to a reader is
locked for LOCK_SECONDS (the docs' feedback.lockDurationAsIso8601, default 60 s): invisible to
every other reader until the holder completes it (accept / DELETE), abandons it (release or
modify / POST .../abandon: visible again at once, one more delivery) or rejects it, or the lock
expires (visible again, no delivery counted, as for C2D messages: "The semantics for receiving
feedback are the same as for cloud-to-device messages"). A settlement with a lock that expired
or was taken over changes nothing (`take`, `completed(..., token)`). Locks are rows too: an
HTTPS reader's lock survives a hub restart; an AMQP reader's ends with its connection (its
batches are visible again at once, no delivery counted), so a restart releases those.

A settled C2D message (completed, expired, dead-lettered, rejected, purged) is needed only until
its record is made, so the step that makes the record deletes the message's row in the same
transaction (at most STEP_ROWS rows per step; `record_step`): each record is made exactly once,
across restarts too, and the C2D table holds only queued messages plus the few settled since the
last step. The sweep finds them through a partial index of the settled rows, and the queued
messages whose TTL passed through one of the queued rows' expiry times: its cost follows the new
work, not the table's size.
"""
import json
import time
import uuid
from datetime import datetime, timezone

CONTENT_TYPE = "application/vnd.microsoft.iothub.feedback.json"
BATCH_MAX = 64
BATCH_SECONDS = 15.0
TTL = 3600.0            # feedback.ttlAsIso8601, default one hour
MAX_DELIVERY = 10       # feedback.maxDeliveryCount, default 10
LOCK_SECONDS = 60.0     # feedback.lockDurationAsIso8601, default 60 s (5 to 300)
STEP_ROWS = 256         # settled C2D rows turned into records (and deleted) per transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS c2d_feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    c2d_seq INTEGER NOT NULL UNIQUE,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS c2d_feedback_batch (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    delivery_count INTEGER NOT NULL DEFAULT 0
);
"""
# c2d_feedback.state: 'queued' (a record waiting for a batch), 'batched', 'dropped' (its device
# was deleted first); on rows of older hubs also 'none' (the message asked for no feedback of
# that kind) and 'delivered' (from before batching).
# c2d_feedback_batch.state: 'queued', 'delivered', 'expired', 'deadlettered'.
_WANTS = {"completed": ("positive", "full"), "expired": ("negative", "full"),
          "deadlettered": ("negative", "full"), "rejected": ("negative", "full"),
          "purged": ("negative", "full")}
_DESCRIPTION = {"completed": "Success", "expired": "Expired", "deadlettered": "DeliveryCountExceeded",
                "rejected": "Rejected", "purged": "Purged"}


def prepare(store):
    store.flush()   # its own transaction, after the open group commit (group_commit.py)
    db = store.db
    db.executescript(_SCHEMA)
    if "batch" not in {r[1] for r in db.execute("PRAGMA table_info(c2d_feedback)")}:
        # a database from before batching: its queued records (one per message then) get batched
        db.execute("ALTER TABLE c2d_feedback ADD COLUMN batch INTEGER")
    columns = {r[1] for r in db.execute("PRAGMA table_info(c2d_feedback_batch)")}
    if "lock_token" not in columns:   # a database from before feedback locks
        db.execute("ALTER TABLE c2d_feedback_batch ADD COLUMN lock_token TEXT")
        db.execute("ALTER TABLE c2d_feedback_batch ADD COLUMN locked_until REAL NOT NULL DEFAULT 0")
        db.execute("ALTER TABLE c2d_feedback_batch ADD COLUMN lock_via TEXT")
    # an AMQP reader's locks end with its connection: none survives the hub that held it
    db.execute("UPDATE c2d_feedback_batch SET lock_token=NULL, locked_until=0, lock_via=NULL"
               " WHERE lock_via='amqp'")
    # the held batches only (the batch table keeps every batch): the sweep's look for expired
    # locks and a settlement's look for its token stay small
    db.execute("CREATE INDEX IF NOT EXISTS c2d_feedback_batch_locked ON c2d_feedback_batch(lock_token,"
               " locked_until) WHERE lock_token IS NOT NULL")
    db.execute("CREATE INDEX IF NOT EXISTS c2d_feedback_pending ON c2d_feedback(state, batch)")
    db.execute("CREATE INDEX IF NOT EXISTS c2d_feedback_batch_queued ON c2d_feedback_batch(created)"
               " WHERE state='queued'")
    # the sweep's two looks at the C2D table; partial, so each holds only the rows it looks for
    db.execute("CREATE INDEX IF NOT EXISTS c2d_settled ON c2d(seq) WHERE state<>'queued'")
    db.execute("CREATE INDEX IF NOT EXISTS c2d_queued_expiry ON c2d(expires) WHERE state='queued'")


def _utc(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sweep(store, now=None, window=BATCH_SECONDS):
    """Mark expired C2D messages, add a feedback record for every settled message that asked
    for one and delete the settled messages, then close the batches that are due. Returns how
    many batches were closed. The hub runs `record_step` first, a chunk per event-loop turn,
    so that this transaction has little left to do."""
    now = time.time() if now is None else now
    db = store.db
    with store.transaction():
        db.execute("UPDATE c2d SET state='expired' WHERE state='queued' AND expires<=?", (now,))
        while _add_records(db, now, STEP_ROWS) == STEP_ROWS:
            pass
        db.execute("UPDATE c2d_feedback_batch SET state='expired' WHERE state='queued' AND created<=?",
                   (now - TTL,))
        closed = _close_batches(db, now, window)
    return closed


def record_step(store, now=None, limit=STEP_ROWS):
    """One short transaction: records for up to `limit` settled C2D messages, whose rows are
    deleted. Returns how many rows it took (`limit`: there may be more)."""
    now = time.time() if now is None else now
    with store.transaction():
        return _add_records(store.db, now, limit)


def _add_records(db, now, limit):
    rows = db.execute(
        "SELECT c.seq, c.device_id, c.message_id, c.props, c.state, c.expires, d.generation_id"
        " FROM c2d c LEFT JOIN devices d ON d.device_id=c.device_id"
        " WHERE c.state<>'queued' ORDER BY c.seq LIMIT ?", (limit,)).fetchall()
    for r in rows:
        if "iothub-ack" not in r["props"]:
            continue
        ack = dict(tuple(p) for p in json.loads(r["props"])).get("iothub-ack")
        if ack not in _WANTS.get(r["state"], ()):
            continue
        if db.execute("SELECT 1 FROM c2d_feedback WHERE c2d_seq=?", (r["seq"],)).fetchone():
            continue    # made by a hub from before settled rows were deleted
        # when the outcome happened: the expiry time itself, else now (within a sweep of it)
        at = min(r["expires"], now) if r["state"] == "expired" else now
        record = {"originalMessageId": r["message_id"], "description": _DESCRIPTION[r["state"]],
                  "statusCode": _DESCRIPTION[r["state"]], "deviceGenerationId": r["generation_id"] or "",
                  "deviceId": r["device_id"], "enqueuedTimeUtc": _utc(at)}
        db.execute("INSERT INTO c2d_feedback (c2d_seq, body, created) VALUES (?,?,?)",
                   (r["seq"], json.dumps(record).encode(), now))
    db.executemany("DELETE FROM c2d WHERE seq=?", [(r["seq"],) for r in rows])
    return len(rows)


def _records(body):
    value = json.loads(body)
    return value if isinstance(value, list) else [value]   # a list: a row from before batching


def _close_batches(db, now, window):
    pending = []
    for r in db.execute("SELECT id, body FROM c2d_feedback WHERE state='queued' AND batch IS NULL"
                        " ORDER BY id").fetchall():
        records = _records(r["body"])
        if all(db.execute("SELECT 1 FROM devices WHERE device_id=? AND generation_id=?",
                          (rec["deviceId"], rec["deviceGenerationId"])).fetchone() for rec in records):
            pending.append(r["id"])
        else:
            db.execute("UPDATE c2d_feedback SET state='dropped' WHERE id=?", (r["id"],))
    row = db.execute("SELECT created FROM c2d_feedback_batch ORDER BY id DESC LIMIT 1").fetchone()
    last = row[0] if row else None     # the newest batch; ORDER BY id, not MAX(created): no scan
    closed = 0
    while len(pending) >= BATCH_MAX or (pending and (last is None or now - last >= window)):
        take, pending = pending[:BATCH_MAX], pending[BATCH_MAX:]
        batch = db.execute("INSERT INTO c2d_feedback_batch (message_id, created) VALUES (?,?)",
                           (str(uuid.uuid4()), now)).lastrowid
        db.executemany("UPDATE c2d_feedback SET state='batched', batch=? WHERE id=?", [(batch, i) for i in take])
        last = now
        closed += 1
    return closed


def pending(store, exclude=(), limit=100, now=None):
    """Queued feedback messages nobody holds a lock on, oldest first, not in `exclude` (batch
    ids): [(batch id, message id, created, body)]. Takes no lock (`take` does)."""
    store.flush()   # its own transaction, after the open group commit (group_commit.py)
    now = time.time() if now is None else now
    db = store.db
    batches = db.execute("SELECT id, message_id, created FROM c2d_feedback_batch WHERE state='queued'"
                         " AND locked_until<=? ORDER BY id LIMIT ?", (now, limit + len(exclude))).fetchall()
    out = []
    for b in batches:
        if b["id"] in exclude:
            continue
        records = []
        for r in db.execute("SELECT body FROM c2d_feedback WHERE batch=? ORDER BY id", (b["id"],)):
            records.extend(_records(r["body"]))
        out.append((b["id"], b["message_id"], b["created"], json.dumps(records).encode()))
        if len(out) >= limit:
            break
    return out


def take(store, via, limit=1, now=None, lock_seconds=LOCK_SECONDS):
    """Lock up to `limit` visible feedback messages for one reader (`via`: "amqp" or "https")
    for `lock_seconds`: [(batch id, lock token, message id, created, body)], oldest first."""
    now = time.time() if now is None else now
    out = []
    for fid, mid, created, body in pending(store, limit=limit, now=now):
        token = str(uuid.uuid4())
        cur = store.db.execute("UPDATE c2d_feedback_batch SET lock_token=?, locked_until=?, lock_via=?"
                               " WHERE id=? AND state='queued' AND locked_until<=?",
                               (token, now + lock_seconds, via, fid, now))
        if cur.rowcount:
            out.append((fid, token, mid, created, body))
    return out


def release(store, tokens):
    """The holder is gone (an AMQP connection ended): its batches are visible again at once,
    no delivery counted."""
    store.flush()
    store.db.executemany("UPDATE c2d_feedback_batch SET lock_token=NULL, locked_until=0, lock_via=NULL"
                         " WHERE lock_token=? AND state='queued'", [(t,) for t in tokens])


def unlock_expired(store, now=None):
    """Clear the locks that expired (their batches are visible again; a late settlement with
    the old token finds nothing); returns how many."""
    now = time.time() if now is None else now
    store.flush()
    return store.db.execute("UPDATE c2d_feedback_batch SET lock_token=NULL, locked_until=0, lock_via=NULL"
                            " WHERE lock_token IS NOT NULL AND locked_until<=?", (now,)).rowcount


def locked(store, token, now=None):
    """The batch id that `token` holds a live lock on, or None (unknown, expired, settled)."""
    now = time.time() if now is None else now
    store.flush()
    row = store.db.execute("SELECT id FROM c2d_feedback_batch WHERE lock_token=? AND state='queued'"
                           " AND locked_until>?", (token, now)).fetchone()
    return row[0] if row else None


_UNLOCK = ", lock_token=NULL, locked_until=0, lock_via=NULL"


def _settle(store, sql, batch_id, token, now):
    """Run `sql` (WHERE id=? AND state='queued' ...) for the batch; with `token`, only while
    that lock is held. True when it changed the batch."""
    store.flush()   # its own transaction, after the open group commit (group_commit.py)
    args = (batch_id,)
    if token is not None:
        sql += " AND lock_token=? AND locked_until>?"
        args = (batch_id, token, time.time() if now is None else now)
    return store.db.execute(sql, args).rowcount > 0


def completed(store, batch_id, token=None, now=None):
    """The receiver accepted the message (deleted from the queue)."""
    return _settle(store, "UPDATE c2d_feedback_batch SET state='delivered'" + _UNLOCK +
                   " WHERE id=? AND state='queued'", batch_id, token, now)


def abandoned(store, batch_id, token=None, now=None):
    """Released or modified: queued again at once, one more delivery; dead-lettered at MAX_DELIVERY."""
    return _settle(store, "UPDATE c2d_feedback_batch SET delivery_count=delivery_count+1,"
                   " state=CASE WHEN delivery_count+1>=%d THEN 'deadlettered' ELSE state END" % MAX_DELIVERY
                   + _UNLOCK + " WHERE id=? AND state='queued'", batch_id, token, now)


def rejected(store, batch_id, token=None, now=None):
    return _settle(store, "UPDATE c2d_feedback_batch SET state='deadlettered'" + _UNLOCK +
                   " WHERE id=? AND state='queued'", batch_id, token, now)
