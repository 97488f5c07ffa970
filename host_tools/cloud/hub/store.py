"""The hub's durable state in one SQLite file (WAL): registry, twins, C2D queues, telemetry.

One Store per process; the hub and the `registry` CLI may use the file at the same time.
The file holds device keys, so it is created 0600 (SQLite gives its -wal/-shm files the same mode).
All methods are synchronous and short; the hub calls them from its event loop. Writes that
only need to be durable before something is acknowledged go through the group commit
(group_commit.py: one COMMIT per batch, on a writer thread); `self.db`, the loop's connection,
sees only committed data.
"""
import base64
import json
import logging
import secrets
import time
import uuid

from host_tools.cloud.hub.group_commit import GroupCommit
from host_tools.sqlite_store import UnusableDatabase, open_db
from host_tools.cloud.hub import twin_rules

log = logging.getLogger("host_tools.cloud.hub")

C2D_QUEUE_LIMIT = 50
C2D_MAX_BYTES = 64 * 1024
C2D_TTL_DEFAULT = 3600
C2D_TTL_MAX = 2 * 24 * 3600
C2D_MAX_DELIVERY = 10  # counts abandons/rejects only (AMQP/HTTPS); never a lock that expired
C2D_LOCK_SECONDS = 60  # a delivered message stays invisible this long unless completed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    primary_key TEXT NOT NULL,
    secondary_key TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'enabled',
    generation_id TEXT NOT NULL,
    etag INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    status_updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS twins (
    device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
    tags TEXT NOT NULL DEFAULT '{}',
    desired TEXT NOT NULL DEFAULT '{}',
    desired_version INTEGER NOT NULL DEFAULT 1,
    reported TEXT NOT NULL DEFAULT '{}',
    reported_version INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS c2d (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    props TEXT NOT NULL,
    body BLOB NOT NULL,
    enqueued REAL NOT NULL,
    expires REAL NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'queued',
    locked_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS c2d_pending ON c2d(device_id, state, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    enqueued REAL NOT NULL,
    system_props TEXT NOT NULL,
    app_props TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events_pruned (
    partition INTEGER PRIMARY KEY,
    last_pseq INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    last_enqueued REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    topic_filter TEXT NOT NULL,
    PRIMARY KEY (device_id, topic_filter)
);
"""


def _setup(db):
    db.executescript(_SCHEMA)
    columns = {r[1] for r in db.execute("PRAGMA table_info(c2d)")}
    if "locked_until" not in columns:  # a data folder from before C2D locks
        db.execute("ALTER TABLE c2d ADD COLUMN locked_until REAL NOT NULL DEFAULT 0")


class StoreError(Exception):
    """A request the store refuses; `status` is the HTTP status that fits."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def new_key():
    return base64.b64encode(secrets.token_bytes(32)).decode()


def valid_key(key):
    try:
        return len(base64.b64decode(key, validate=True)) >= 16
    except (ValueError, TypeError):
        return False


def valid_device_id(device_id):
    # IoT Hub: up to 128 chars of ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ '
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.%_*?!(),:=@$'")
    return isinstance(device_id, str) and 0 < len(device_id) <= 128 and set(device_id) <= allowed


def merge_patch(doc, patch):
    """Twin patch semantics: nested objects merge, null deletes a key."""
    for k, v in patch.items():
        if v is None:
            doc.pop(k, None)
        elif isinstance(v, dict) and isinstance(doc.get(k), dict):
            merge_patch(doc[k], v)
        elif isinstance(v, dict):
            doc[k] = merge_patch({}, v)
        else:
            doc[k] = v
    return doc


class Store:
    def __init__(self, path, create=True):
        """Open the hub database at `path` (a new empty one if create and there is none).

        A file that is not a usable SQLite database raises StoreError and is left as it was."""
        self.path = path
        try:
            self.db = open_db(path, create, setup=_setup)
        except FileNotFoundError:
            raise StoreError(404, "no hub database at %s" % path) from None
        except UnusableDatabase as exc:
            raise StoreError(500, "%s is not a usable hub database (%s); move it away to start an "
                                  "empty registry, or put back a copy" % (path, exc.reason)) from None
        self.group = GroupCommit(self.db, path)
        # C2D messages whose lock or completion is submitted but not yet committed: seq -> the
        # time they are hidden until (inf: completed). visible_c2d reads committed rows, so this
        # keeps a message from being delivered twice meanwhile. Used on the event loop only.
        self._hidden = {}

    def close(self):
        self.group.close()
        self.db.close()

    def flush(self):
        """Wait until every group-commit write submitted so far is committed (group_commit.py)."""
        self.group.flush()

    def write_later(self, fn, *args):
        """fn(db, *args) in the group commit, not waited for (a failure is logged)."""
        return _logged(self.group.submit(fn, *args))

    def transaction(self):
        """A transaction of its own on the store's connection, after the group commit's
        pending writes are committed (flush): `with store.transaction(): ...`."""
        self.flush()
        return _Tx(self.db)

    # ---- registry -------------------------------------------------------------------------
    def add_device(self, device_id, primary_key=None, secondary_key=None, status="enabled"):
        if not valid_device_id(device_id):
            raise StoreError(400, "invalid device id %r (letters, digits and -._:@ up to 128)" % device_id)
        if status not in ("enabled", "disabled"):
            raise StoreError(400, "status must be enabled or disabled")
        primary_key = primary_key or new_key()
        secondary_key = secondary_key or new_key()
        if not (valid_key(primary_key) and valid_key(secondary_key)):
            raise StoreError(400, "device keys must be base64 of at least 16 bytes")
        now = time.time()
        with self.transaction():
            if self.db.execute("SELECT 1 FROM devices WHERE device_id=?", (device_id,)).fetchone():
                raise StoreError(409, "device %s already exists" % device_id)
            self.db.execute(
                "INSERT INTO devices (device_id, primary_key, secondary_key, status, generation_id,"
                " created, status_updated) VALUES (?,?,?,?,?,?,?)",
                (device_id, primary_key, secondary_key, status, uuid.uuid4().hex, now, now))
            self.db.execute("INSERT INTO twins (device_id) VALUES (?)", (device_id,))
        return self.get_device(device_id)

    def update_device(self, device_id, status=None, primary_key=None, secondary_key=None):
        dev = self.require_device(device_id)
        status = status or dev["status"]
        if status not in ("enabled", "disabled"):
            raise StoreError(400, "status must be enabled or disabled")
        primary_key = primary_key or dev["primary_key"]
        secondary_key = secondary_key or dev["secondary_key"]
        if not (valid_key(primary_key) and valid_key(secondary_key)):
            raise StoreError(400, "device keys must be base64 of at least 16 bytes")
        with self.transaction():
            self.db.execute(
                "UPDATE devices SET status=?, primary_key=?, secondary_key=?, etag=etag+1,"
                " status_updated=CASE WHEN status=? THEN status_updated ELSE ? END WHERE device_id=?",
                (status, primary_key, secondary_key, status, time.time(), device_id))
        return self.get_device(device_id)

    def get_device(self, device_id):
        row = self.db.execute("SELECT * FROM devices WHERE device_id=?", (device_id,)).fetchone()
        return dict(row) if row else None

    def require_device(self, device_id):
        dev = self.get_device(device_id)
        if dev is None:
            raise StoreError(404, "device %s is not registered" % device_id)
        return dev

    def list_devices(self):
        return [dict(r) for r in self.db.execute("SELECT * FROM devices ORDER BY device_id")]

    def remove_device(self, device_id):
        self.require_device(device_id)
        with self.transaction():
            for table in ("subscriptions", "c2d", "twins", "devices"):
                self.db.execute("DELETE FROM %s WHERE device_id=?" % table, (device_id,))

    # ---- twins ----------------------------------------------------------------------------
    def get_twin(self, device_id):
        row = self.db.execute("SELECT * FROM twins WHERE device_id=?", (device_id,)).fetchone()
        if row is None:
            raise StoreError(404, "device %s is not registered" % device_id)
        return {"tags": json.loads(row["tags"]),
                "desired": json.loads(row["desired"]), "desired_version": row["desired_version"],
                "reported": json.loads(row["reported"]), "reported_version": row["reported_version"]}

    def patch_twin(self, device_id, section, patch):
        """Merge `patch` into "desired", "reported" or "tags"; returns the new section version."""
        try:
            if not isinstance(patch, dict):
                raise twin_rules.TwinRuleError("a twin patch must be a JSON object")
            if section != "reported":  # the service may send back a twin it read
                patch = twin_rules.strip_read_only(patch)
            twin_rules.check_patch(section, patch)
        except twin_rules.TwinRuleError as exc:
            raise StoreError(400, str(exc)) from None
        with self.transaction():
            twin = self.get_twin(device_id)
            doc = merge_patch(twin[section], patch)
            try:
                twin_rules.check_size(section, doc)
            except twin_rules.TwinRuleError as exc:
                raise StoreError(400, str(exc)) from None
            if section == "tags":
                self.db.execute("UPDATE twins SET tags=? WHERE device_id=?", (json.dumps(doc), device_id))
                return None
            version = twin[section + "_version"] + 1
            self.db.execute("UPDATE twins SET %s=?, %s_version=? WHERE device_id=?" % (section, section),
                            (json.dumps(doc), version, device_id))
        return version

    # ---- C2D ------------------------------------------------------------------------------
    def enqueue_c2d(self, device_id, body, props, ttl=None, now=None):
        """props: ordered list of (key, value) for the topic bag, "$.mid" first. Returns message id
        once the message is committed; StoreError (nothing written) when it is refused. Outside
        an event loop only (inside one, use enqueue_c2d_grouped)."""
        return self.enqueue_c2d_grouped(device_id, body, props, ttl, now).result()

    def enqueue_c2d_grouped(self, device_id, body, props, ttl=None, now=None):
        """enqueue_c2d in the group commit: a future with the message id once it is durable, or
        StoreError (nothing written) when the message is refused."""
        return self.group.submit(self._enqueue_c2d, device_id, body, props, ttl, now)

    @staticmethod
    def _enqueue_c2d(db, device_id, body, props, ttl, now):
        now = time.time() if now is None else now
        if db.execute("SELECT 1 FROM devices WHERE device_id=?", (device_id,)).fetchone() is None:
            raise StoreError(404, "device %s is not registered" % device_id)
        ttl = C2D_TTL_DEFAULT if ttl is None else ttl
        if not 0 < ttl <= C2D_TTL_MAX:
            raise StoreError(400, "ttl must be between 1 and %d seconds" % C2D_TTL_MAX)
        if len(body) > C2D_MAX_BYTES:
            raise StoreError(413, "C2D message larger than 64 KB")
        mid = dict(props).get("$.mid")
        _expire_c2d(db, device_id, now)
        (count,) = db.execute(
            "SELECT COUNT(*) FROM c2d WHERE device_id=? AND state='queued'", (device_id,)).fetchone()
        if count >= C2D_QUEUE_LIMIT:
            raise StoreError(403, "device %s already has %d C2D messages queued" % (device_id, count))
        db.execute(
            "INSERT INTO c2d (device_id, message_id, props, body, enqueued, expires)"
            " VALUES (?,?,?,?,?,?)",
            (device_id, mid, json.dumps(list(props)), bytes(body), now, now + ttl))
        return mid

    def visible_c2d(self, device_id, exclude=(), limit=50, now=None):
        """Committed queued messages that are not locked, oldest first: [(seq, props, body)].
        Expired and dead-lettered ones are set aside (in the group commit: doing it again after
        a power cut changes nothing). `exclude`: seqs the caller already holds."""
        now = time.time() if now is None else now
        rows = self.db.execute(
            "SELECT seq, props, body, expires, delivery_count FROM c2d WHERE device_id=? AND state='queued'"
            " AND locked_until<=? ORDER BY seq", (device_id, now)).fetchall()
        out, aside = [], False
        for r in rows:
            if r["expires"] <= now or r["delivery_count"] >= C2D_MAX_DELIVERY:
                aside = True
                continue
            seq = r["seq"]
            if seq in exclude or self._hidden.get(seq, 0) > now:
                continue
            if len(out) < limit:
                out.append((seq, [tuple(p) for p in json.loads(r["props"])], r["body"]))
        if aside:
            _logged(self.group.submit(_set_aside, device_id, now))
        return out

    def lock_c2d(self, seq, until, now=None):
        """Lock a message being delivered (IoT Hub's Invisible state); True if it is still queued
        (and not expired). The lock joins the group commit without being waited for: a lock lost
        to a power cut only makes the message visible again."""
        now = time.time() if now is None else now
        row = self.db.execute("SELECT state, expires FROM c2d WHERE seq=?", (seq,)).fetchone()
        if row is None or row["state"] != "queued" or row["expires"] <= now \
                or self._hidden.get(seq) == float("inf"):
            return False
        self._hide(seq, until, self.group.submit(
            _execute, "UPDATE c2d SET locked_until=? WHERE seq=? AND state='queued'", (until, seq)))
        return True

    def _hide(self, seq, until, fut):
        """Keep `seq` from visible_c2d until `until` while `fut` (its write) is not committed."""
        self._hidden[seq] = until
        if fut.done():
            self._hidden.pop(seq, None)
            return fut

        def done(f):
            if self._hidden.get(seq) == until:
                del self._hidden[seq]
            if not f.cancelled() and f.exception() is not None:
                log.error("C2D %d: write not stored: %s", seq, f.exception())
        fut.add_done_callback(done)
        return fut

    def next_c2d_unlock(self, device_id, now=None):
        """When the earliest locked message of the device becomes visible again (None: none locked)."""
        now = time.time() if now is None else now
        (t,) = self.db.execute("SELECT MIN(locked_until) FROM c2d WHERE device_id=? AND state='queued'"
                               " AND locked_until>?", (device_id, now)).fetchone()
        # locks not committed yet (any device's: waking early only costs a look)
        pending = [u for u in self._hidden.values() if now < u < float("inf")]
        return min([t] + pending) if t is not None else min(pending, default=None)

    def complete_c2d(self, seq):
        """Joins the group commit: a completion lost to a power cut redelivers the message (at least
        once, as IoT Hub); the returned future is done once it is durable."""
        return self._hide(seq, float("inf"), self.group.submit(
            _execute, "UPDATE c2d SET state='completed' WHERE seq=? AND state='queued'", (seq,)))

    def purge_c2d(self, device_id):
        """Every queued message of the device, locked (delivered, not completed) ones too, is
        purged (its feedback, if asked for: "Purged"); returns how many. A purged message is not
        delivered again, and a device's later PUBACK for it completes nothing."""
        with self.transaction():
            _set_aside(self.db, device_id, time.time())     # expired, dead-lettered: not purged
            return self.db.execute("UPDATE c2d SET state='purged' WHERE device_id=? AND state='queued'",
                                   (device_id,)).rowcount

    def c2d_states(self, device_id):
        return [dict(r) for r in self.db.execute(
            "SELECT seq, message_id, state, delivery_count, locked_until FROM c2d WHERE device_id=? ORDER BY seq",
            (device_id,))]

    def queued_c2d_count(self, device_id):
        return self.db.execute("SELECT COUNT(*) FROM c2d WHERE device_id=? AND state='queued'",
                               (device_id,)).fetchone()[0]

    # ---- telemetry ------------------------------------------------------------------------
    def add_event(self, device_id, system_props, app_props, body, now=None, partition=None):
        """Store one telemetry message; with `partition` (the Event Hubs-compatible endpoint's,
        see amqp/eventlog.py) it also gets the next sequence number of that partition, in the
        same statement, after the last one retention pruned (`events_pruned`, eventlog.prune_step).
        Returns the row's seq; the write is committed when this returns. Outside an event loop
        only (inside one, use add_event_grouped)."""
        return self.add_event_grouped(device_id, system_props, app_props, body, now, partition).result()

    def add_event_grouped(self, device_id, system_props, app_props, body, now=None, partition=None):
        """add_event in the group commit: a future with the row's seq once it is durable."""
        return self.group.submit(_add_event, device_id, system_props, app_props, body, now, partition)

    def events_since(self, since, device_id=None, limit=500):
        sql = "SELECT * FROM events WHERE seq>?"
        args = [since]
        if device_id:
            sql += " AND device_id=?"
            args.append(device_id)
        rows = self.db.execute(sql + " ORDER BY seq LIMIT ?", args + [limit]).fetchall()
        return [{"seq": r["seq"], "deviceId": r["device_id"], "enqueued": r["enqueued"],
                 "systemProperties": json.loads(r["system_props"]),
                 "properties": json.loads(r["app_props"]), "body": r["body"]} for r in rows]

    def last_event_seq(self):
        return self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]

    # ---- subscriptions (CleanSession=0 keeps them across connections and restarts) ---------
    def subscriptions(self, device_id):
        return {r[0] for r in self.db.execute(
            "SELECT topic_filter FROM subscriptions WHERE device_id=?", (device_id,))}

    def set_subscriptions(self, device_id, filters):
        with self.transaction():
            self.db.execute("DELETE FROM subscriptions WHERE device_id=?", (device_id,))
            self.db.executemany("INSERT INTO subscriptions VALUES (?,?)",
                                [(device_id, f) for f in sorted(filters)])


def _execute(db, sql, args):
    db.execute(sql, args)


def _logged(fut):
    """A write nobody waits for: its failure is logged (and the future's exception retrieved)."""
    def done(f):
        if not f.cancelled() and f.exception() is not None:
            log.error("hub store: write not stored: %s", f.exception())
    if not fut.done():
        fut.add_done_callback(done)
    return fut


def _expire_c2d(db, device_id, now):
    db.execute("UPDATE c2d SET state='expired' WHERE device_id=? AND state='queued' AND expires<=?",
               (device_id, now))


def _set_aside(db, device_id, now):
    _expire_c2d(db, device_id, now)
    db.execute("UPDATE c2d SET state='deadlettered' WHERE device_id=? AND state='queued'"
               " AND delivery_count>=?", (device_id, C2D_MAX_DELIVERY))


def _add_event(db, device_id, system_props, app_props, body, now, partition):
    now = time.time() if now is None else now
    if partition is None:
        cur = db.execute(
            "INSERT INTO events (device_id, enqueued, system_props, app_props, body) VALUES (?,?,?,?,?)",
            (device_id, now, json.dumps(system_props), json.dumps(app_props), bytes(body)))
    else:
        cur = db.execute(
            "INSERT INTO events (device_id, enqueued, system_props, app_props, body, partition, pseq)"
            " VALUES (?,?,?,?,?,?,MAX((SELECT COALESCE(MAX(pseq), -1) FROM events WHERE partition=?),"
            " (SELECT COALESCE(MAX(last_pseq), -1) FROM events_pruned WHERE partition=?)) + 1)",
            (device_id, now, json.dumps(system_props), json.dumps(app_props), bytes(body),
             partition, partition, partition))
    return cur.lastrowid


class _Tx:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
