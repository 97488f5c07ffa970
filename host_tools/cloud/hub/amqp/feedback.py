"""C2D feedback records, derived from the C2D queue's final states (durable, same SQLite file).

A message sent with iothub-ack positive/full gets a "Success" record when the device completes
it; negative/full get "Expired" or "DeliveryCountExceeded" when it expires or is dead-lettered.
Each record is one feedback message (IoT Hub may batch several; each record is its own here)
and stays queued until a feedback receiver accepts it.
"""
import json
import time
from datetime import datetime, timezone

CONTENT_TYPE = "application/vnd.microsoft.iothub.feedback.json"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS c2d_feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    c2d_seq INTEGER NOT NULL UNIQUE,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    created REAL NOT NULL
);
"""
_WANTS = {"completed": ("positive", "full"), "expired": ("negative", "full"),
          "deadlettered": ("negative", "full")}
_DESCRIPTION = {"completed": "Success", "expired": "Expired", "deadlettered": "DeliveryCountExceeded"}


def prepare(store):
    store.flush()   # its own transaction, after the open group commit (group_commit.py)
    store.db.executescript(_SCHEMA)


def _utc(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sweep(store, now=None):
    """Mark expired C2D messages and add a feedback record for every finished message that
    asked for one. Returns how many records were added."""
    store.flush()   # its own transaction, after the open group commit (group_commit.py)
    now = time.time() if now is None else now
    db = store.db
    added = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("UPDATE c2d SET state='expired' WHERE state='queued' AND expires<=?", (now,))
        rows = db.execute(
            "SELECT c.seq, c.device_id, c.message_id, c.props, c.state, c.enqueued, d.generation_id"
            " FROM c2d c LEFT JOIN devices d ON d.device_id=c.device_id"
            " WHERE c.state IN ('completed','expired','deadlettered') AND c.props LIKE '%iothub-ack%'"
            " AND NOT EXISTS (SELECT 1 FROM c2d_feedback f WHERE f.c2d_seq=c.seq)").fetchall()
        for r in rows:
            ack = dict(tuple(p) for p in json.loads(r["props"])).get("iothub-ack")
            if ack not in _WANTS[r["state"]]:
                db.execute("INSERT INTO c2d_feedback (c2d_seq, body, state, created) VALUES (?,?,?,?)",
                           (r["seq"], b"", "none", now))
                continue
            record = {"originalMessageId": r["message_id"], "description": _DESCRIPTION[r["state"]],
                      "statusCode": _DESCRIPTION[r["state"]], "deviceGenerationId": r["generation_id"] or "",
                      "deviceId": r["device_id"], "enqueuedTimeUtc": _utc(now)}
            db.execute("INSERT INTO c2d_feedback (c2d_seq, body, created) VALUES (?,?,?)",
                       (r["seq"], json.dumps([record]).encode(), now))
            added += 1
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return added


def pending(store, exclude=(), limit=100):
    rows = store.db.execute("SELECT id, body FROM c2d_feedback WHERE state='queued' ORDER BY id LIMIT ?",
                            (limit + len(exclude),)).fetchall()
    return [(r["id"], r["body"]) for r in rows if r["id"] not in exclude][:limit]


def completed(store, fid):
    """A receiver accepted record `fid`. In the group commit, not waited for: lost to a power
    cut, the record is only sent again."""
    return store.write_later(_delivered, fid)


def _delivered(db, fid):
    db.execute("UPDATE c2d_feedback SET state='delivered' WHERE id=?", (fid,))
