"""SQLite storage of the commerce backend: API clients, carts and their lines, orders and their
history, event subscriptions and the event deliveries still owed to them.

One file (DATA/commerce.sqlite3, WAL, synchronous=FULL, 0600: it holds payment tokens and
client secret hashes). Every change happens in `transaction()` (BEGIN IMMEDIATE): a status
change and the event deliveries it owes commit together, so a kill -9 leaves either both or
neither, and `serve` and the CLI can share the file.
"""
import json

from host_tools.sqlite_store import SqliteStore

DB_NAME = "commerce.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    salt TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS carts (
    pk INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL,
    cart_id TEXT NOT NULL,
    customer TEXT NOT NULL,               -- JSON {"id", "name"}
    status TEXT NOT NULL,                 -- open | ordered
    fulfillment TEXT,                     -- JSON PhysicalFulfillmentComponent
    payment TEXT,                         -- JSON FederatedPaymentComponent (token in clear)
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (client_id, cart_id)
);
CREATE TABLE IF NOT EXISTS cart_lines (
    cart_pk INTEGER NOT NULL REFERENCES carts (pk),
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price INTEGER NOT NULL,
    PRIMARY KEY (cart_pk, sku)
);
CREATE TABLE IF NOT EXISTS orders (
    pk INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    cart_pk INTEGER NOT NULL UNIQUE REFERENCES carts (pk),
    status TEXT NOT NULL,
    reason TEXT,
    version INTEGER NOT NULL,
    placed_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    next_status TEXT,
    next_due REAL,
    eta REAL,
    amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    document TEXT NOT NULL,
    UNIQUE (client_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS orders_due ON orders (next_due) WHERE next_due IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    order_pk INTEGER NOT NULL REFERENCES orders (pk),
    version INTEGER NOT NULL,
    at REAL NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    subscription TEXT NOT NULL,
    event TEXT NOT NULL,                  -- the Event Grid event (JSON)
    state TEXT NOT NULL,                  -- pending | delivered | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (subscription, id)
    WHERE state = 'pending';
"""


def _json(value):
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


class Row(dict):
    """A row as a dict with attribute access; JSON columns decoded."""
    __getattr__ = dict.__getitem__


def _row(row, json_columns=()):
    if row is None:
        return None
    out = Row(dict(row))
    for name in json_columns:
        if out.get(name) is not None:
            out[name] = json.loads(out[name])
    return out


class Store(SqliteStore):
    DB_NAME = DB_NAME
    SCHEMA = _SCHEMA

    # -- meta -----------------------------------------------------------------------------
    def meta(self, key, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    def set_meta(self, key, value):
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                        "DO UPDATE SET value = excluded.value", (key, json.dumps(value)))

    def next_number(self, name):
        number = int(self.meta(name, 0)) + 1
        self.set_meta(name, number)
        return number

    # -- clients --------------------------------------------------------------------------
    def client(self, client_id):
        return _row(self.db.execute("SELECT * FROM clients WHERE client_id = ?",
                                    (client_id,)).fetchone())

    def put_client(self, client_id, salt, secret_hash, now):
        self.db.execute("INSERT INTO clients (client_id, salt, secret_hash, created_at) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET "
                        "salt = excluded.salt, secret_hash = excluded.secret_hash",
                        (client_id, salt, secret_hash, now))

    def clients(self):
        return [r["client_id"] for r in
                self.db.execute("SELECT client_id FROM clients ORDER BY client_id")]

    # -- carts ----------------------------------------------------------------------------
    _CART_JSON = ("customer", "fulfillment", "payment")

    def cart(self, client_id, cart_id):
        return _row(self.db.execute("SELECT * FROM carts WHERE client_id = ? AND cart_id = ?",
                                    (client_id, cart_id)).fetchone(), self._CART_JSON)

    def cart_by_pk(self, pk):
        return _row(self.db.execute("SELECT * FROM carts WHERE pk = ?", (pk,)).fetchone(),
                    self._CART_JSON)

    def insert_cart(self, client_id, cart_id, customer, now):
        self.db.execute("INSERT INTO carts (client_id, cart_id, customer, status, created_at, "
                        "updated_at) VALUES (?, ?, ?, 'open', ?, ?)",
                        (client_id, cart_id, _json(customer), now, now))
        return self.cart(client_id, cart_id)

    def update_cart(self, pk, now, **fields):
        for name, value in fields.items():
            if name not in ("customer", "fulfillment", "payment", "status"):
                raise ValueError(name)
            value = _json(value) if name in self._CART_JSON else value
            self.db.execute(f"UPDATE carts SET {name} = ?, updated_at = ? WHERE pk = ?",
                            (value, now, pk))
        return self.cart_by_pk(pk)

    def lines(self, cart_pk):
        return [_row(r) for r in self.db.execute(
            "SELECT * FROM cart_lines WHERE cart_pk = ? ORDER BY rowid", (cart_pk,))]

    def put_line(self, cart_pk, sku, name, quantity, unit_price):
        self.db.execute("INSERT INTO cart_lines (cart_pk, sku, name, quantity, unit_price) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (cart_pk, sku) DO UPDATE SET "
                        "quantity = excluded.quantity, unit_price = excluded.unit_price, "
                        "name = excluded.name", (cart_pk, sku, name, quantity, unit_price))

    def delete_line(self, cart_pk, sku):
        return self.db.execute("DELETE FROM cart_lines WHERE cart_pk = ? AND sku = ?",
                               (cart_pk, sku)).rowcount

    # -- orders ---------------------------------------------------------------------------
    def _order(self, sql, args):
        return _row(self.db.execute(sql, args).fetchone(), ("document",))

    def order(self, order_id):
        return self._order("SELECT * FROM orders WHERE order_id = ?", (order_id,))

    def order_by_key(self, client_id, key):
        return self._order("SELECT * FROM orders WHERE client_id = ? AND idempotency_key = ?",
                           (client_id, key))

    def order_by_cart(self, cart_pk):
        return self._order("SELECT * FROM orders WHERE cart_pk = ?", (cart_pk,))

    def orders(self, limit=100):
        return [_row(r, ("document",)) for r in self.db.execute(
            "SELECT * FROM orders ORDER BY pk DESC LIMIT ?", (limit,))]

    def insert_order(self, order_id, client_id, key, cart_pk, status, now, next_status,
                     next_due, eta, amount_cents, currency, document, source):
        pk = self.db.execute(
            "INSERT INTO orders (order_id, client_id, idempotency_key, cart_pk, status, version, "
            "placed_at, updated_at, next_status, next_due, eta, amount_cents, currency, document) "
            "VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order_id, client_id, key, cart_pk, status, now, now, next_status, next_due, eta,
             amount_cents, currency, _json(document))).lastrowid
        self._history(pk, 1, now, status, None, source)
        return self.order(order_id)

    def update_order(self, order, status, reason, now, next_status, next_due, source):
        version = order.version + 1
        self.db.execute("UPDATE orders SET status = ?, reason = ?, version = ?, updated_at = ?, "
                        "next_status = ?, next_due = ? WHERE pk = ?",
                        (status, reason, version, now, next_status, next_due, order.pk))
        self._history(order.pk, version, now, status, reason, source)
        return self.order(order.order_id)

    def _history(self, pk, version, now, status, reason, source):
        self.db.execute("INSERT INTO history (order_pk, version, at, status, reason, source) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (pk, version, now, status, reason, source))

    def history(self, order_pk):
        return [_row(r) for r in self.db.execute(
            "SELECT version, at, status, reason, source FROM history WHERE order_pk = ? "
            "ORDER BY version", (order_pk,))]

    def due(self, now, limit=100):
        return [_row(r, ("document",)) for r in self.db.execute(
            "SELECT * FROM orders WHERE next_due IS NOT NULL AND next_due <= ? "
            "ORDER BY next_due, pk LIMIT ?", (now, limit))]

    def next_due(self):
        return self.db.execute("SELECT MIN(next_due) FROM orders WHERE next_due IS NOT NULL"
                               ).fetchone()[0]

    # -- subscriptions and deliveries -----------------------------------------------------
    def subscriptions(self):
        return [_row(r) for r in self.db.execute("SELECT * FROM subscriptions ORDER BY name")]

    def put_subscription(self, name, endpoint, now):
        self.db.execute("INSERT INTO subscriptions (name, endpoint, created_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET endpoint = excluded.endpoint",
                        (name, endpoint, now))

    def delete_subscription(self, name):
        self.db.execute("DELETE FROM deliveries WHERE subscription = ? AND state = 'pending'",
                        (name,))
        return self.db.execute("DELETE FROM subscriptions WHERE name = ?", (name,)).rowcount

    def add_delivery(self, subscription, event, now):
        self.db.execute("INSERT INTO deliveries (subscription, event, state, next_attempt, "
                        "created_at) VALUES (?, ?, 'pending', ?, ?)",
                        (subscription, _json(event), now, now))

    def heads(self):
        """The oldest pending delivery of each subscription (each subscription's events go out
        in order: a failing one holds back the ones behind it), with its endpoint."""
        return [_row(r, ("event",)) for r in self.db.execute(
            "SELECT d.*, s.endpoint FROM deliveries d JOIN subscriptions s "
            "ON s.name = d.subscription WHERE d.id IN (SELECT MIN(id) FROM deliveries "
            "WHERE state = 'pending' GROUP BY subscription) ORDER BY d.id")]

    def delivery_done(self, delivery_id, state, now, error=None):
        self.db.execute("UPDATE deliveries SET state = ?, attempts = attempts + 1, done_at = ?, "
                        "last_error = ? WHERE id = ?", (state, now, error, delivery_id))

    def delivery_failed(self, delivery_id, error, next_attempt):
        self.db.execute("UPDATE deliveries SET attempts = attempts + 1, last_error = ?, "
                        "next_attempt = ? WHERE id = ?", (error, next_attempt, delivery_id))

    def deliveries(self, state=None):
        sql, args = "SELECT * FROM deliveries", ()
        if state:
            sql, args = sql + " WHERE state = ?", (state,)
        return [_row(r, ("event",)) for r in self.db.execute(sql + " ORDER BY id", args)]
