"""SQLite storage for the order service: orders, their history, customer profiles, the hub
event cursor and the C2D outbox.

Every change happens inside `transaction()` (BEGIN IMMEDIATE ... COMMIT), so the service and
the CLI can share one database, and a crash leaves either all of a step or none of it: the
event cursor moves in the same transaction as the orders those events created, and each
status change writes its C2D message to the outbox in the same transaction as the status.
"""
import json

from host_tools.sqlite_store import SqliteStore

DB_NAME = "orders.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS profiles (
    device_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    shipping_method TEXT NOT NULL,
    payment_token TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    pk INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL,              -- '' when the request failed before an order existed
    device_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    placed_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    next_status TEXT,                    -- where the timeline takes the order next ...
    next_due REAL,                       -- ... and when (NULL: nothing scheduled)
    eta REAL,
    amount_cents INTEGER,
    currency TEXT,
    document TEXT NOT NULL,              -- the commerce order (JSON), '{}' when none
    UNIQUE (device_id, request_id)
);
CREATE INDEX IF NOT EXISTS orders_due ON orders (next_due) WHERE next_due IS NOT NULL;
CREATE INDEX IF NOT EXISTS orders_order_id ON orders (order_id);
CREATE INDEX IF NOT EXISTS orders_request_id ON orders (request_id);
CREATE TABLE IF NOT EXISTS history (
    order_pk INTEGER NOT NULL REFERENCES orders (pk),
    at REAL NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_order ON history (order_pk);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    correlation_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS commerce_work (  -- calls owed to the commerce API (commerce_bridge.py)
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                  -- place | cancel
    device_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    sku TEXT,
    quantity INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    UNIQUE (kind, device_id, request_id)
);
"""


class Order:
    """One row of `orders`, document decoded."""
    __slots__ = ("pk", "order_id", "device_id", "request_id", "status", "reason", "placed_at",
                 "updated_at", "next_status", "next_due", "eta", "amount_cents", "currency",
                 "document")

    def __init__(self, row):
        for name in self.__slots__:
            setattr(self, name, row[name])
        self.document = json.loads(row["document"])


class Store(SqliteStore):
    DB_NAME = DB_NAME
    SCHEMA = _SCHEMA

    # -- meta: the hub event cursor and the order number counter -------------------------
    def _meta(self, key, default):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def _set_meta(self, key, value):
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, str(value)))

    def cursors(self):
        """{partition id: the sequence number of the last event handled there} (-1: none)."""
        return {p: int(v) for p, v in json.loads(self._meta("cursors", "{}")).items()}

    def set_cursors(self, update):
        """Move the cursors of the partitions in `update` (the others keep theirs)."""
        cursors = self.cursors()
        cursors.update({str(p): int(v) for p, v in update.items()})
        self._set_meta("cursors", json.dumps(cursors, sort_keys=True))

    def timeline_config(self):
        """The timeline the service last ran with (offline commands schedule with it)."""
        value = self._meta("timeline", None)
        return None if value is None else json.loads(value)

    def set_timeline_config(self, offsets):
        self._set_meta("timeline", json.dumps(offsets, sort_keys=True))

    def allocate_order_id(self, prefix="ORD"):
        number = int(self._meta("last_order_number", 0)) + 1
        self._set_meta("last_order_number", number)
        return f"{prefix}-{number:06d}"

    # -- profiles -----------------------------------------------------------------------
    def profile(self, device_id):
        return self.db.execute("SELECT * FROM profiles WHERE device_id = ?", (device_id,)).fetchone()

    def set_profile(self, device_id, name, address, shipping_method, payment_token, now):
        self.db.execute(
            "INSERT INTO profiles (device_id, name, address, shipping_method, payment_token, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
            "name = excluded.name, address = excluded.address, "
            "shipping_method = excluded.shipping_method, payment_token = excluded.payment_token, "
            "updated_at = excluded.updated_at",
            (device_id, name, address, shipping_method, payment_token, now))

    # -- orders -------------------------------------------------------------------------
    def _one(self, sql, args):
        row = self.db.execute(sql, args).fetchone()
        return Order(row) if row else None

    def find(self, device_id, request_id):
        return self._one("SELECT * FROM orders WHERE device_id = ? AND request_id = ?",
                         (device_id, request_id))

    def get(self, pk):
        return self._one("SELECT * FROM orders WHERE pk = ?", (pk,))

    def lookup(self, key):
        """Orders whose order id or order request id is `key` (a request id may repeat across
        devices, so this can return several)."""
        rows = self.db.execute("SELECT * FROM orders WHERE (order_id = ? AND order_id != '') "
                               "OR request_id = ? ORDER BY pk", (key, key)).fetchall()
        return [Order(r) for r in rows]

    def orders(self, device_id=None, limit=None):
        sql, args = "SELECT * FROM orders", []
        if device_id:
            sql, args = sql + " WHERE device_id = ?", [device_id]
        sql += " ORDER BY pk DESC"
        if limit:
            sql, args = sql + " LIMIT ?", args + [int(limit)]
        return [Order(r) for r in self.db.execute(sql, args).fetchall()]

    def insert_order(self, order_id, device_id, request_id, status, reason, now, next_status,
                     next_due, eta, amount_cents, currency, document, source):
        pk = self.db.execute(
            "INSERT INTO orders (order_id, device_id, request_id, status, reason, placed_at, "
            "updated_at, next_status, next_due, eta, amount_cents, currency, document) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order_id, device_id, request_id, status, reason, now, now, next_status, next_due,
             eta, amount_cents, currency, json.dumps(document, separators=(",", ":")))).lastrowid
        self._history(pk, now, status, reason, source)
        return self.get(pk)

    def update_status(self, pk, status, reason, now, next_status, next_due, source):
        self.db.execute("UPDATE orders SET status = ?, reason = ?, updated_at = ?, "
                        "next_status = ?, next_due = ? WHERE pk = ?",
                        (status, reason, now, next_status, next_due, pk))
        self._history(pk, now, status, reason, source)
        return self.get(pk)

    def _history(self, pk, now, status, reason, source):
        self.db.execute("INSERT INTO history (order_pk, at, status, reason, source) "
                        "VALUES (?, ?, ?, ?, ?)", (pk, now, status, reason, source))

    def history(self, pk):
        return [dict(r) for r in self.db.execute(
            "SELECT at, status, reason, source FROM history WHERE order_pk = ? ORDER BY rowid",
            (pk,)).fetchall()]

    def due(self, now, limit=100):
        rows = self.db.execute("SELECT * FROM orders WHERE next_due IS NOT NULL AND next_due <= ? "
                               "ORDER BY next_due, pk LIMIT ?", (now, limit)).fetchall()
        return [Order(r) for r in rows]

    def next_due(self):
        row = self.db.execute("SELECT MIN(next_due) AS t FROM orders "
                              "WHERE next_due IS NOT NULL").fetchone()
        return row["t"]

    # -- outbox -------------------------------------------------------------------------
    def enqueue(self, device_id, message_id, correlation_id, body, now):
        self.db.execute("INSERT INTO outbox (device_id, message_id, correlation_id, body, "
                        "created_at) VALUES (?, ?, ?, ?, ?)",
                        (device_id, message_id, correlation_id, body, now))

    def pending(self, limit=100, after=0, exclude=()):
        """Outbox messages in the order they were written, after id `after`, skipping the
        devices in `exclude`."""
        exclude = tuple(exclude)
        marks = ",".join("?" * len(exclude))
        sql = "SELECT * FROM outbox WHERE id > ?"
        if exclude:
            sql += f" AND device_id NOT IN ({marks})"
        return [dict(r) for r in self.db.execute(
            sql + " ORDER BY id LIMIT ?", (after,) + exclude + (limit,)).fetchall()]

    def pending_count(self):
        return self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def delivered(self, outbox_id):
        self.db.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,))

    def attempt_failed(self, outbox_id, error):
        self.db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                        (error, outbox_id))

    # -- commerce work: calls owed to the commerce API, done after the commit -------------
    def add_work(self, kind, device_id, request_id, key, sku, quantity, now):
        """False when that work is already queued (a re-sent request)."""
        return self.db.execute(
            "INSERT OR IGNORE INTO commerce_work (kind, device_id, request_id, idempotency_key, "
            "sku, quantity, next_attempt, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, device_id, request_id, key, sku, quantity, now, now)).rowcount == 1

    def work_due(self, now, limit=100):
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM commerce_work WHERE next_attempt <= ? ORDER BY id LIMIT ?",
            (now, limit)).fetchall()]

    def work_for(self, device_id, request_id):
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM commerce_work WHERE device_id = ? AND request_id = ? ORDER BY id",
            (device_id, request_id)).fetchall()]

    def work_by_key(self, key):
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM commerce_work WHERE idempotency_key = ?", (key,)).fetchall()]

    def next_work(self):
        return self.db.execute("SELECT MIN(next_attempt) FROM commerce_work").fetchone()[0]

    def work_done(self, work_id):
        self.db.execute("DELETE FROM commerce_work WHERE id = ?", (work_id,))

    def work_retry(self, work_id, error, next_attempt):
        self.db.execute("UPDATE commerce_work SET attempts = attempts + 1, last_error = ?, "
                        "next_attempt = ? WHERE id = ?", (error, next_attempt, work_id))

    def find_order_id(self, order_id):
        return self._one("SELECT * FROM orders WHERE order_id = ? AND order_id != ''",
                         (order_id,))
