"""The hub store's group commit (host_tools/cloud/hub/group_commit.py): writes that share one
COMMIT are acknowledged only once it happened, and what the hub PUBACKed survives SIGKILL."""
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


def test_grouped_writes_commit_together_and_waiters_resolve_only_after(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    store = Store(path)

    async def scenario():
        futures = [store.add_event_grouped("dev", {}, {}, b"%d" % i)[1] for i in range(5)]
        assert all(f is not None and not f.done() for f in futures)
        assert _count_elsewhere(path) == 0          # nothing acknowledged, nothing committed
        await asyncio.gather(*futures)
        assert _count_elsewhere(path) == 5

    asyncio.run(scenario())
    store.close()


def test_a_failing_write_undoes_only_itself(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    store = Store(path)

    def broken():
        store.db.execute("INSERT INTO events (device_id, enqueued, system_props, app_props, body)"
                         " VALUES ('x', 0, '{}', '{}', x'')")
        raise ValueError("bad")

    async def scenario():
        _, first = store.add_event_grouped("dev", {}, {}, b"a")
        try:
            store.group.write(broken)
        except ValueError:
            pass
        else:
            raise AssertionError("the write's error must reach its caller")
        await first
        assert [r[0] for r in store.db.execute("SELECT device_id FROM events")] == ["dev"]

    asyncio.run(scenario())
    store.close()


def test_a_store_transaction_commits_the_open_batch_first(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    store = Store(path)

    async def scenario():
        _, durable = store.add_event_grouped("dev", {}, {}, b"a")
        store.add_device("other")                   # BEGIN IMMEDIATE .. COMMIT of its own
        assert _count_elsewhere(path) == 1
        await durable

    asyncio.run(scenario())
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
