"""Group commit for the hub's store: many small writes share one COMMIT (one fsync).

With synchronous=FULL every COMMIT costs an fsync, and the hub made four per order. A write
that only has to be durable before something is acknowledged (a telemetry PUBLISH before its
PUBACK; a C2D delivery's count and completion, which may be replayed) joins the open batch:
`write(fn, *args)` runs `fn` inside one transaction that stays open until the event loop
comes round again, then COMMIT makes the whole batch durable at once and the futures that
`write` returned resolve. Whoever acknowledges awaits its future first, so what the hub
acknowledged is on disk exactly as before: power-cut safety does not weaken, only fsyncs are
shared. A failed COMMIT rolls the batch back and fails every waiter (nothing was acknowledged).

Everything else flushes the batch before it runs (`flush()`): ordinary transactions of the
store, and any read that shows data to a client (the Event Hubs-compatible endpoint must
never serve an event that a power cut could still take back).

Without a running event loop (the registry CLI, tests calling the store directly) `write`
commits at once and returns None.
"""
import asyncio


class GroupCommit:
    def __init__(self, db):
        self.db = db
        self.open = False
        self._waiters = []
        self._scheduled = False

    def write(self, fn, *args):
        """Run fn(*args) in the open batch; returns (result, future done once it is durable)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self.flush()
            return fn(*args), None
        if not self.open:
            self.db.execute("BEGIN IMMEDIATE")
            self.open = True
        self.db.execute("SAVEPOINT group_write")
        try:
            result = fn(*args)
        except BaseException:
            self.db.execute("ROLLBACK TO group_write")
            self.db.execute("RELEASE group_write")
            raise
        self.db.execute("RELEASE group_write")
        fut = loop.create_future()
        self._waiters.append(fut)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.flush)
        return result, fut

    def flush(self):
        """COMMIT the open batch (if any) and resolve its waiters."""
        self._scheduled = False
        if not self.open:
            return
        waiters, self._waiters = self._waiters, []
        self.open = False
        try:
            self.db.execute("COMMIT")
        except BaseException as exc:
            try:
                self.db.execute("ROLLBACK")
            except Exception:
                pass
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("commit failed"))
            if not isinstance(exc, Exception):
                raise
            return
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
