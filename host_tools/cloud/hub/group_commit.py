"""Group commit for the hub's store: many small writes share one COMMIT (one fsync), and the
COMMIT runs on a writer thread with its own SQLite connection, never on the event loop.

With synchronous=FULL every COMMIT costs an fsync (~2 ms here). A write that only has to be
durable before something is acknowledged (a telemetry PUBLISH before its PUBACK; a C2D message
before the sender hears "accepted"; a C2D delivery's lock and completion, which may be
replayed) is handed to `submit(fn, *args)`: it returns at once with a future. The writer thread
takes every write handed over so far, runs each as `fn(db, *args)` in its own savepoint of one
transaction on the writer's connection, COMMITs the batch, and only then resolves the futures
(on the event loop) with each write's result or exception. The writes of one event-loop turn
are handed over together, when the turn ends, so they share a batch; those handed over while
a COMMIT is running form the next one: under load a batch holds everything that arrived during
the previous fsync, and the event loop keeps reading, deciding and sending meanwhile.

Whoever acknowledges awaits the future first, so what the hub acknowledged is on disk:
power-cut safety does not weaken. A write that raises undoes only itself (its savepoint) and
fails only its future; a failed COMMIT rolls the batch back and fails every future of it
(nothing was acknowledged).

The store's own connection (the loop's) only ever sees committed data, since nothing
uncommitted is written on it: the Event Hubs-compatible endpoint never serves an event, and a
device is never sent a C2D message, that a power cut could still take back. `flush()` waits
until everything submitted so far is committed; the store's ordinary transactions call it
first (read-your-writes, and no lock contention with the writer).

Without a running event loop (the registry CLI, tests calling the store directly) `submit`
runs the write in a transaction of its own at once and returns a finished future-like value
(`Done`).
"""
import asyncio
import sqlite3
import threading


class Done:
    """What submit returns without an event loop: the write already committed (or failed)."""
    __slots__ = ("_result", "_exc")

    def __init__(self, result=None, exc=None):
        self._result, self._exc = result, exc

    def done(self):
        return True

    def result(self):
        if self._exc is not None:
            raise self._exc
        return self._result

    def exception(self):
        return self._exc


class GroupCommit:
    def __init__(self, db, path):
        self.db = db            # the store's (the loop's) connection: no-loop writes run on it
        self.path = path
        self._cond = threading.Condition()
        self._staged = []       # [(fn, args, future)] of this loop turn (loop thread only)
        self._pending = []      # handed over, not yet taken by the writer
        self._submitted = 0     # writes submitted / finished (committed or failed), for flush()
        self._finished = 0
        self._thread = None
        self._stopping = False

    # ---- the event loop's side ----------------------------------------------------------
    def submit(self, fn, *args):
        """Run fn(db, *args) in the next batch; a future with its result once it is durable."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            return self._run_now(fn, args)
        fut = loop.create_future()
        if not self._staged:
            loop.call_soon(self._hand_over)     # once this loop turn's callbacks have run
        self._staged.append((fn, args, fut))
        return fut

    def _hand_over(self):
        staged, self._staged = self._staged, []
        if not staged:
            return
        with self._cond:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._writer, name="hub-store-writer", daemon=True)
                self._thread.start()
            self._pending.extend(staged)
            self._submitted += len(staged)
            self._cond.notify_all()

    def _run_now(self, fn, args):
        self.flush()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.db, *args)
        except BaseException as exc:
            self.db.execute("ROLLBACK")
            if not isinstance(exc, Exception):
                raise
            return Done(exc=exc)
        self.db.execute("COMMIT")
        return Done(result)

    def flush(self):
        """Block until every write submitted so far is committed (or failed)."""
        self._hand_over()
        with self._cond:
            target = self._submitted
            while self._finished < target:
                self._cond.wait()

    def close(self):
        """Commit what is pending and stop the writer thread."""
        self._hand_over()
        with self._cond:
            thread = self._thread
            self._stopping = True
            self._cond.notify_all()
        if thread is not None:
            thread.join()
        with self._cond:
            self._thread = None

    # ---- the writer thread --------------------------------------------------------------
    def _writer(self):
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            while True:
                with self._cond:
                    while not self._pending and not self._stopping:
                        self._cond.wait()
                    if not self._pending:
                        return
                    batch, self._pending = self._pending, []
                outcomes = self._commit(db, batch)
                for loop, done in _by_loop(batch, outcomes).items():
                    try:
                        loop.call_soon_threadsafe(_resolve, done)
                    except RuntimeError:
                        pass        # the loop is closed: nobody waits any more
                with self._cond:
                    self._finished += len(batch)
                    self._cond.notify_all()
        finally:
            db.close()

    @staticmethod
    def _commit(db, batch):
        """Run the batch in one transaction: [(ok, result or exception)] in batch order."""
        outcomes = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for fn, args, _fut in batch:
                db.execute("SAVEPOINT group_write")
                try:
                    result = fn(db, *args)
                except Exception as exc:
                    db.execute("ROLLBACK TO group_write")
                    db.execute("RELEASE group_write")
                    outcomes.append((False, exc))
                    continue
                db.execute("RELEASE group_write")
                outcomes.append((True, result))
            db.execute("COMMIT")
        except Exception as exc:    # BEGIN or COMMIT failed: nothing of the batch is durable
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return [(False, exc)] * len(batch)
        return outcomes


def _by_loop(batch, outcomes):
    out = {}
    for (_fn, _args, fut), outcome in zip(batch, outcomes):
        out.setdefault(fut.get_loop(), []).append((fut, outcome))
    return out


def _resolve(done):
    for fut, (ok, value) in done:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
