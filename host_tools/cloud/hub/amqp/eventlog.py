"""The Event Hubs-compatible view of the hub's durable telemetry log (the `events` table).

Each event belongs to one partition (from its device id) and has a sequence number in it,
both stored on the row by Store.add_event. The offset of an event is its row number (`seq`)
as a string: increasing within a partition, as Event Hubs offsets are, and unique.

Reads use the store's own connection, which only ever sees committed rows (group_commit.py):
an event a power cut could still take back is never served.
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
    return -1 if row[0] is None else row[0]


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
        return {"begin": 0, "last_seq": -1, "last_offset": "-1", "last_time_ms": 0, "empty": True}
    return {"begin": first, "last_seq": last["pseq"], "last_offset": str(last["seq"]),
            "last_time_ms": int(last["enqueued"] * 1000), "empty": False}
