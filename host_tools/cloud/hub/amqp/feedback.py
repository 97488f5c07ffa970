"""C2D feedback: records derived from the C2D queue's final states, batched into feedback
messages as IoT Hub batches them (durable, same SQLite file).

A message sent with iothub-ack positive/full gets a "Success" record when the device completes
it; negative/full get "Expired" when its TTL passes, "DeliveryCountExceeded" when it is
dead-lettered after too many abandons, "Rejected" when a device rejects it (MQTT devices cannot)
and "Purged" when its queue is purged (here: a CleanSession=1 connect).

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


def pending(store, exclude=(), limit=100):
    """Queued feedback messages, oldest first, not in `exclude` (batch ids in flight):
    [(batch id, message id, created, body)]."""
    store.flush()   # its own transaction, after the open group commit (group_commit.py)
    db = store.db
    batches = db.execute("SELECT id, message_id, created FROM c2d_feedback_batch WHERE state='queued'"
                         " ORDER BY id LIMIT ?", (limit + len(exclude),)).fetchall()
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


def _settle(store, sql, batch_id):
    store.flush()   # its own transaction, after the open group commit (group_commit.py)
    store.db.execute(sql, (batch_id,))


def completed(store, batch_id):
    """The receiver accepted the message."""
    _settle(store, "UPDATE c2d_feedback_batch SET state='delivered' WHERE id=? AND state='queued'", batch_id)


def abandoned(store, batch_id):
    """Released or modified: queued again, one more delivery; dead-lettered at MAX_DELIVERY."""
    _settle(store, "UPDATE c2d_feedback_batch SET delivery_count=delivery_count+1,"
                   " state=CASE WHEN delivery_count+1>=%d THEN 'deadlettered' ELSE state END"
                   " WHERE id=? AND state='queued'" % MAX_DELIVERY, batch_id)


def rejected(store, batch_id):
    _settle(store, "UPDATE c2d_feedback_batch SET state='deadlettered' WHERE id=? AND state='queued'", batch_id)
