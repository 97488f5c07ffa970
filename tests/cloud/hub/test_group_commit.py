"""The hub store's group commit (host_tools/cloud/hub/group_commit.py): writes that share one
COMMIT, run on a writer thread, are acknowledged only once it happened, and what the hub
PUBACKed survives SIGKILL."""
import asyncio
import signal
import sqlite3

from host_tools.cloud.hub.store import Store
from tests.cloud.hub.mqtt_peer import _recv_exact, publish_packet, raw_device


def _count_elsewhere(path):
    """Events another connection (another process would see the same) can read: committed ones."""
    other = sqlite3.connect(path)
    try:
        return other.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        other.close()


def test_a_write_is_acknowledged_only_once_committed_and_off_the_event_loop(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    store = Store(path)

    async def scenario():
        seen_when_done = []
        futures = [store.add_event_grouped("dev", {}, {}, b"%d" % i) for i in range(5)]
        assert all(not f.done() for f in futures)   # resolved on the loop, after the COMMIT
        for f in futures:
            f.add_done_callback(lambda _f: seen_when_done.append(_count_elsewhere(path)))
        seqs = await asyncio.gather(*futures)
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
        assert seen_when_done and min(seen_when_done) == 5   # every waiter saw all five committed
        assert store.group._thread is not None and store.group._thread.name == "hub-store-writer"

    asyncio.run(scenario())
    store.close()


def test_a_failing_write_undoes_only_itself(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    store = Store(path)

    def broken(db):
        db.execute("INSERT INTO events (device_id, enqueued, system_props, app_props, body)"
                   " VALUES ('x', 0, '{}', '{}', x'')")
        raise ValueError("bad")

    async def scenario():
        first = store.add_event_grouped("dev", {}, {}, b"a")
        failing = store.group.submit(broken)
        last = store.add_event_grouped("dev2", {}, {}, b"b")
        try:
            await failing
        except ValueError:
            pass
        else:
            raise AssertionError("the write's error must reach its caller")
        await first
        await last
        assert [r[0] for r in store.db.execute("SELECT device_id FROM events ORDER BY seq")] == ["dev", "dev2"]

    asyncio.run(scenario())
    store.close()


def test_the_loops_connection_sees_only_committed_rows_and_a_transaction_waits_for_the_writer(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    store = Store(path)

    async def scenario():
        durable = store.add_event_grouped("dev", {}, {}, b"a")
        store.add_device("other")                   # BEGIN IMMEDIATE .. COMMIT of its own, after the batch
        assert _count_elsewhere(path) == 1
        assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
        await durable

    asyncio.run(scenario())
    store.close()


def test_without_an_event_loop_a_write_commits_at_once(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    store = Store(path)
    seq = store.add_event("dev", {}, {}, b"a")
    assert _count_elsewhere(path) == 1 and seq == 1
    store.close()


def test_everything_pubacked_survives_sigkill(hub):
    key = hub.add_device("kill-dev")
    s = raw_device(hub, "kill-dev", key)
    topic = "devices/kill-dev/messages/events/"
    count = 200
    s.sendall(b"".join(publish_packet(topic, b'{"n":%d}' % i, qos=1, packet_id=i + 1) for i in range(count)))
    acked = set()
    while len(acked) < count:                       # PUBACK: 0x40 0x02 packet id
        packet = _recv_exact(s, 4)
        assert packet[0] == 0x40, packet
        acked.add(int.from_bytes(packet[2:4], "big"))
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait()
    s.close()
    db = sqlite3.connect(hub.data_dir + "/hub.sqlite3")
    try:
        bodies = {r[0] for r in db.execute("SELECT body FROM events WHERE device_id='kill-dev'")}
    finally:
        db.close()
    assert bodies == {b'{"n":%d}' % i for i in range(count)}
    hub.proc = None
