"""The Event Hubs-compatible view of the hub's durable telemetry log (the `events` table).

Each event belongs to one partition (from its device id) and has a sequence number in it,
both stored on the row by Store.add_event. The offset of an event is its row number (`seq`)
as a string: increasing within a partition, as Event Hubs offsets are, and unique.

Reads use the store's own connection, which only ever sees committed rows (group_commit.py):
an event a power cut could still take back is never served.

Retention: IoT Hub keeps events on the built-in endpoint for its retention time (1 day by
default, 1 to 7 days), then they expire and can no longer be read. `prune_step` deletes the
oldest events enqueued before a cutoff, a bounded chunk per call (the hub calls it once per
event-loop turn, so the loop is never blocked for long), always a prefix of the log so every
partition keeps a contiguous run of sequence numbers. The last sequence number, offset and
time pruned from each partition are kept in `events_pruned`: sequence numbers carry on after
it (a partition whose events all expired does not start again at 0) and the partition's
properties still report its last enqueued event. A receiver asking for an offset, sequence
number or time older than what is retained starts at the oldest retained event, as Event Hubs
does (no error); that needs nothing here, since the pruned rows are gone.
"""
from host_tools.cloud.hub.amqp import rules


def prepare(store, partitions):
    """Add the partition columns to an older database and place events stored without one."""
    store.flush()   # its own transaction, after the open group commit (group_commit.py)
    db = store.db
    cols = {r[1] for r in db.execute("PRAGMA table_info(events)")}
    db.execute("BEGIN IMMEDIATE")
    try:
        if "partition" not in cols:
            db.execute("ALTER TABLE events ADD COLUMN partition INTEGER")
            db.execute("ALTER TABLE events ADD COLUMN pseq INTEGER")
        db.execute("CREATE UNIQUE INDEX IF NOT EXISTS events_partition ON events(partition, pseq)")
        for seq, device_id in db.execute(
                "SELECT seq, device_id FROM events WHERE partition IS NULL ORDER BY seq").fetchall():
            p = rules.partition_of(device_id, partitions)
            db.execute("UPDATE events SET partition=?, pseq=(SELECT COALESCE(MAX(pseq), -1) + 1 FROM events"
                       " WHERE partition=?) WHERE seq=?", (p, p, seq))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def start_after(store, partition, selector, now_ms=None):
    """The pseq a new receiver starts after (-1: from the beginning), from its parsed filter."""
    field, inclusive, value = selector
    db = store.db
    if field == "offset":
        if value == "latest":
            return last_pseq(store, partition)
        op = "<" if inclusive else "<="
        row = db.execute("SELECT MAX(pseq) FROM events WHERE partition=? AND seq %s ?" % op,
                         (partition, value)).fetchone()
    elif field == "sequence-number":
        return value - 1 if inclusive else value
    else:  # enqueued-time, ms since the epoch
        op = "<" if inclusive else "<="
        row = db.execute("SELECT MAX(pseq) FROM events WHERE partition=? AND enqueued %s ?" % op,
                         (partition, value / 1000.0)).fetchone()
    return -1 if row[0] is None else row[0]


def last_pseq(store, partition):
    row = store.db.execute("SELECT MAX(pseq) FROM events WHERE partition=?", (partition,)).fetchone()
    if row[0] is not None:
        return row[0]
    pruned = _pruned(store, partition)
    return -1 if pruned is None else pruned["last_pseq"]


def _pruned(store, partition):
    return store.db.execute("SELECT last_pseq, last_offset, last_enqueued FROM events_pruned WHERE partition=?",
                            (partition,)).fetchone()


PRUNE_CHUNK = 500


def prune_step(store, cutoff, chunk=None):
    """Delete up to `chunk` of the oldest events, those enqueued before `cutoff` (seconds since
    the epoch) at the head of the log; returns how many (0: the head is retained, done).
    One short transaction of its own."""
    store.flush()   # its own transaction, after the open group commit (group_commit.py)
    db = store.db
    head = db.execute("SELECT seq, enqueued FROM events ORDER BY seq LIMIT ?",
                      (chunk or PRUNE_CHUNK,)).fetchall()
    n = 0
    for row in head:
        if row["enqueued"] >= cutoff:
            break
        n += 1
    if not n:
        return 0
    upto = head[n - 1]["seq"]
    db.execute("BEGIN IMMEDIATE")
    try:
        # SQLite: with MAX(), the bare columns come from the row holding the maximum
        db.execute(
            "INSERT INTO events_pruned (partition, last_pseq, last_offset, last_enqueued)"
            " SELECT partition, MAX(pseq), seq, enqueued FROM events WHERE seq<=? AND partition IS NOT NULL"
            " GROUP BY partition"
            " ON CONFLICT(partition) DO UPDATE SET last_pseq=excluded.last_pseq, last_offset=excluded.last_offset,"
            " last_enqueued=excluded.last_enqueued WHERE excluded.last_pseq>events_pruned.last_pseq", (upto,))
        db.execute("DELETE FROM events WHERE seq<=?", (upto,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return n


def read(store, partition, after_pseq, limit):
    return store.db.execute(
        "SELECT seq, pseq, device_id, enqueued, system_props, app_props, body FROM events"
        " WHERE partition=? AND pseq>? ORDER BY pseq LIMIT ?", (partition, after_pseq, limit)).fetchall()


def partition_info(store, partition):
    db = store.db
    first = db.execute("SELECT MIN(pseq) FROM events WHERE partition=?", (partition,)).fetchone()[0]
    last = db.execute("SELECT seq, pseq, enqueued FROM events WHERE partition=? ORDER BY pseq DESC LIMIT 1",
                      (partition,)).fetchone()
    if last is None:
        pruned = _pruned(store, partition)
        if pruned is None:
            return {"begin": 0, "last_seq": -1, "last_offset": "-1", "last_time_ms": 0, "empty": True}
        # every event expired: the next one will get last_pseq + 1
        return {"begin": pruned["last_pseq"] + 1, "last_seq": pruned["last_pseq"],
                "last_offset": str(pruned["last_offset"]), "last_time_ms": int(pruned["last_enqueued"] * 1000),
                "empty": True}
    return {"begin": first, "last_seq": last["pseq"], "last_offset": str(last["seq"]),
            "last_time_ms": int(last["enqueued"] * 1000), "empty": False}
