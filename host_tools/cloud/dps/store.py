"""The local DPS's durable state in its own SQLite file (WAL, 0600: it holds enrollment keys).

  meta           the id scope, made once per data folder ("0ne" + 8 hex digits, like Azure's)
  enrollments    symmetric-key enrollments: kind "group" (devices hold keys derived from the
                 group key) or "individual" (the device holds the enrollment's key); enabled or
                 disabled
  registrations  what each registration id was assigned (device id, hub), so a device that
                 registers again gets the same assignment
  operations     register operations, polled by operation id until assigned / disabled

The hub opens it next to hub.sqlite3; the `dps` CLI works on the file while the hub runs.
"""
import secrets
import sqlite3
import time
import uuid

from host_tools.cloud.hub.store import new_key, valid_device_id, valid_key
from host_tools.sqlite_store import UnusableDatabase, open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS enrollments (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('group', 'individual')),
    primary_key TEXT NOT NULL,
    secondary_key TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'enabled',
    device_id TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
    registration_id TEXT PRIMARY KEY,
    enrollment TEXT NOT NULL,
    device_id TEXT NOT NULL,
    assigned_hub TEXT NOT NULL,
    etag TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS operations (
    operation_id TEXT PRIMARY KEY,
    registration_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL
);
"""


class DpsStoreError(Exception):
    """A request the store refuses; `status` is the HTTP status that fits."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def valid_registration_id(reg_id):
    # DPS: lowercase alphanumerics and - . _ :, up to 128 characters
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-._:")
    return isinstance(reg_id, str) and 0 < len(reg_id) <= 128 and set(reg_id) <= allowed


def valid_group_name(name):
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
    return isinstance(name, str) and 0 < len(name) <= 128 and set(name) <= allowed


class DpsStore:
    def __init__(self, path):
        self.path = path
        try:
            self.db = open_db(path, setup=lambda db: db.executescript(_SCHEMA))
        except UnusableDatabase as exc:
            raise DpsStoreError(500, "%s is not a usable DPS database (%s); move it away to start "
                                     "with no enrollments, or put back a copy" % (path, exc.reason)) from None

    def close(self):
        self.db.close()

    def id_scope(self):
        row = self.db.execute("SELECT value FROM meta WHERE key='id_scope'").fetchone()
        if row:
            return row[0]
        scope = "0ne" + secrets.token_hex(4).upper()
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('id_scope', ?)", (scope,))
        return self.db.execute("SELECT value FROM meta WHERE key='id_scope'").fetchone()[0]

    # ---- enrollments ----------------------------------------------------------------------
    def add_enrollment(self, kind, name, primary_key=None, secondary_key=None, device_id=None):
        if kind == "group" and not valid_group_name(name):
            raise DpsStoreError(400, "invalid group name %r (letters, digits and -._ up to 128)" % name)
        if kind == "individual" and not valid_registration_id(name):
            raise DpsStoreError(400, "invalid registration id %r (lowercase letters, digits and -._: "
                                     "up to 128)" % name)
        if device_id is not None and not valid_device_id(device_id):
            raise DpsStoreError(400, "invalid device id %r" % device_id)
        primary_key, secondary_key = primary_key or new_key(), secondary_key or new_key()
        if not (valid_key(primary_key) and valid_key(secondary_key)):
            raise DpsStoreError(400, "enrollment keys must be base64 of at least 16 bytes")
        now = time.time()
        try:
            self.db.execute(
                "INSERT INTO enrollments (name, kind, primary_key, secondary_key, device_id, created,"
                " updated) VALUES (?,?,?,?,?,?,?)",
                (name, kind, primary_key, secondary_key, device_id, now, now))
        except sqlite3.IntegrityError:
            raise DpsStoreError(409, "enrollment %s already exists" % name) from None
        return self.get_enrollment(name)

    def get_enrollment(self, name):
        row = self.db.execute("SELECT * FROM enrollments WHERE name=?", (name,)).fetchone()
        return dict(row) if row else None

    def require_enrollment(self, name):
        e = self.get_enrollment(name)
        if e is None:
            raise DpsStoreError(404, "no enrollment %s" % name)
        return e

    def list_enrollments(self):
        return [dict(r) for r in self.db.execute("SELECT * FROM enrollments ORDER BY kind, name")]

    def set_status(self, name, status):
        self.require_enrollment(name)
        self.db.execute("UPDATE enrollments SET status=?, updated=? WHERE name=?", (status, time.time(), name))
        return self.get_enrollment(name)

    def remove_enrollment(self, name):
        self.require_enrollment(name)
        self.db.execute("DELETE FROM enrollments WHERE name=?", (name,))
        self.db.execute("DELETE FROM registrations WHERE enrollment=?", (name,))

    def groups(self):
        return [dict(r) for r in self.db.execute("SELECT * FROM enrollments WHERE kind='group' ORDER BY created")]

    # ---- registrations and operations -----------------------------------------------------
    def get_registration(self, reg_id):
        row = self.db.execute("SELECT * FROM registrations WHERE registration_id=?", (reg_id,)).fetchone()
        return dict(row) if row else None

    def save_registration(self, reg_id, enrollment, device_id, assigned_hub):
        now = time.time()
        old = self.get_registration(reg_id)
        created = old["created"] if old else now
        self.db.execute(
            "INSERT OR REPLACE INTO registrations VALUES (?,?,?,?,?,?,?)",
            (reg_id, enrollment, device_id, assigned_hub, '"%s"' % uuid.uuid4().hex[:16], created, now))
        return self.get_registration(reg_id)

    def add_operation(self, reg_id, status):
        op_id = "4.%s.%s" % (secrets.token_hex(8), uuid.uuid4())
        self.db.execute("INSERT INTO operations VALUES (?,?,?,?)", (op_id, reg_id, status, time.time()))
        # keep the table small: an operation is only polled for seconds after its register
        self.db.execute("DELETE FROM operations WHERE created < ?", (time.time() - 24 * 3600,))
        return op_id

    def get_operation(self, op_id):
        row = self.db.execute("SELECT * FROM operations WHERE operation_id=?", (op_id,)).fetchone()
        return dict(row) if row else None
