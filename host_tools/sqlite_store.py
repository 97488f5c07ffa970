"""The SQLite files of the host services, opened one way.

Each file is created 0600 before its first byte (they hold device keys, payment tokens and
client secret hashes; SQLite gives the -wal/-shm files the same mode), runs WAL with
synchronous=FULL (a power cut loses nothing that was committed) and foreign keys on. A file
that is not a usable database is refused with a clear error before anything is written to it.

`open_db` is the open alone (the hub's store uses it and keeps its own transactions for its
group commit); `SqliteStore` is the base of a store that lives in a data folder (orders,
commerce): the open, its schema and nested transactions.
"""
import os
import sqlite3
from contextlib import contextmanager


class UnusableDatabase(sqlite3.DatabaseError):
    """The file is there but SQLite cannot use it (damaged, truncated, not a database); it was
    left as it was. `path` and `reason` say which file and why."""

    def __init__(self, path, reason):
        super().__init__(f"{path} is not a usable database ({reason}); move it away to start "
                         f"an empty one, or put back a copy")
        self.path = path
        self.reason = reason


def open_db(path, create=True, setup=None):
    """An autocommit connection (rows as sqlite3.Row) to the database at `path`.

    No file there: a new empty one (0600) if `create`, else FileNotFoundError. `setup(db)`
    (the schema, migrations) runs after the checks; a file that fails them or it raises
    UnusableDatabase."""
    if not os.path.exists(path):
        if not create:
            raise FileNotFoundError(path)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    try:
        # quick_check reads every page once: a damaged file fails here, before anything
        # (the WAL switch, the schema, the file's mode) is written to it
        (result,) = db.execute("PRAGMA quick_check(1)").fetchone()
        if result != "ok":
            raise sqlite3.DatabaseError(result)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        if setup is not None:
            setup(db)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise UnusableDatabase(path, exc) from None
    os.chmod(path, 0o600)
    return db


class SqliteStore:
    """A store in DATA_DIR/DB_NAME with the tables of SCHEMA (CREATE ... IF NOT EXISTS
    statements). Every change happens in `transaction()`."""

    DB_NAME = None
    SCHEMA = ""

    def __init__(self, data_dir, create=True):
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, self.DB_NAME)
        if create:
            os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self._depth = 0
        self.db = open_db(self.path, create, setup=self._create_schema)

    def _create_schema(self, db):
        self.db = db
        with self.transaction():
            for statement in self.SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def close(self):
        self.db.close()

    @contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE .. COMMIT; nested calls join the outer transaction via a savepoint,
        so an inner failure rolls back only the inner part."""
        if self._depth:
            name = f"sp{self._depth}"
            self.db.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self.db.execute(f"ROLLBACK TO {name}")
                self.db.execute(f"RELEASE {name}")
                raise
            else:
                self.db.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._depth = 0
