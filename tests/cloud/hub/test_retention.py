"""Retention on the Event Hubs-compatible endpoint (amqp/eventlog.py prune_step, the hub's
background pass): events older than the retention time are removed, a prefix of the log at a
time; sequence numbers carry on; a receiver asking for something older starts at the oldest
retained event. Store level with explicit times here; the official azure-eventhub client
against a running hub in test_amqp_sdk.py."""
import asyncio
import json
import subprocess
import sys

import pytest

from host_tools.cloud.hub.amqp import config, eventlog
from host_tools.cloud.hub.amqp.server import AmqpServer
from host_tools.cloud.hub.store import Store
from tests.cloud.hub.conftest import REPO

T0 = 1_800_000_000.0
HOUR = 3600.0


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "hub.sqlite3"))
    eventlog.prepare(s, 2)
    yield s
    s.close()


def add(store, partition, at, body=b"x"):
    return store.add_event("dev", {}, {}, body, now=at, partition=partition)


def pseqs(store, partition):
    return [r["pseq"] for r in eventlog.read(store, partition, -1, 1000)]


def prune(store, cutoff, chunk=500):
    total = 0
    while True:
        n = eventlog.prune_step(store, cutoff, chunk)
        assert n <= chunk
        if not n:
            return total
        total += n


def test_old_events_go_in_bounded_steps_and_the_rest_stay(store):
    for i in range(10):
        add(store, i % 2, T0 + i)
    assert eventlog.prune_step(store, T0 + 7, chunk=3) == 3     # at most a chunk per step
    assert prune(store, T0 + 7, chunk=3) == 4                   # then the rest of what is older
    assert pseqs(store, 0) == [4] and pseqs(store, 1) == [3, 4]
    assert eventlog.prune_step(store, T0 + 7) == 0


def test_sequence_numbers_carry_on_after_everything_expired(store):
    offsets = [add(store, 0, T0 + i) for i in range(3)]
    assert prune(store, T0 + 10) == 3
    info = eventlog.partition_info(store, 0)
    assert info == {"begin": 3, "last_seq": 2, "last_offset": str(offsets[-1]),
                    "last_time_ms": int((T0 + 2) * 1000), "empty": True}
    assert eventlog.last_pseq(store, 0) == 2
    add(store, 0, T0 + 20)
    assert pseqs(store, 0) == [3]                               # not 0 again
    info = eventlog.partition_info(store, 0)
    assert info["begin"] == 3 and info["last_seq"] == 3 and not info["empty"]
    assert eventlog.partition_info(store, 1)["empty"] and eventlog.partition_info(store, 1)["last_seq"] == -1


def test_a_receiver_asking_for_expired_events_starts_at_the_oldest_retained(store):
    offsets = [add(store, 0, T0 + i) for i in range(6)]
    prune(store, T0 + 3)                                        # pseq 0-2 expired, 3-5 retained
    assert eventlog.partition_info(store, 0)["begin"] == 3

    def first(selector):
        after = eventlog.start_after(store, 0, selector)
        return [r["pseq"] for r in eventlog.read(store, 0, after, 1)]

    assert first(("sequence-number", True, 0)) == [3]
    assert first(("sequence-number", False, 1)) == [3]
    assert first(("offset", True, offsets[0])) == [3]
    assert first(("offset", False, offsets[1])) == [3]
    assert first(("offset", False, -1)) == [3]                  # '-1': the start of the stream
    assert first(("enqueued-time", True, int(T0 * 1000))) == [3]
    assert first(("sequence-number", True, 4)) == [4]           # retained ones as before
    assert first(("offset", False, "latest")) == []


def test_hub_pass_uses_the_retention_time_and_yields_between_chunks(store, monkeypatch):
    monkeypatch.setattr(eventlog, "PRUNE_CHUNK", 1)

    class FakeHub:   # only what AmqpServer.prune_once reads
        pass
    hub = FakeHub()
    hub.store = store
    for i in range(5):
        add(store, 0, T0 + i * HOUR)                            # 0 h, 1 h, ... 4 h
    server = AmqpServer(hub, {"retentionHours": 2}, clock=lambda: T0 + 4 * HOUR)
    turns = []

    async def scenario():
        async def other():
            for _ in range(10):
                turns.append(len(pseqs(store, 0)))
                await asyncio.sleep(0)
        return (await asyncio.gather(server.prune_once(), other()))[0]

    assert asyncio.run(scenario()) == 2                         # 0 h and 1 h are older than 2 h
    assert pseqs(store, 0) == [2, 3, 4]
    assert 4 in turns                                           # the loop ran between two chunks


def test_retention_hours_are_checked_and_kept(tmp_path):
    data = str(tmp_path)
    assert config.ensure(data)["retentionHours"] == 24          # IoT Hub's default: one day
    assert config.ensure(data, retention_hours=168)["retentionHours"] == 168
    assert config.ensure(data)["retentionHours"] == 168         # kept for the next start
    for bad in (0.5, 169):
        with pytest.raises(config.ConfigError, match="between 1 and 168"):
            config.ensure(data, retention_hours=bad)


@pytest.mark.parametrize("value", ["0", "200"])
def test_cli_refuses_a_bad_retention_in_one_line(tmp_path, value):
    out = subprocess.run([sys.executable, "-m", "host_tools", "hub", "--data", str(tmp_path / "d"),
                          "--retention-hours", value], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "d" / "eventhub.json").exists() or json.loads(
        (tmp_path / "d" / "eventhub.json").read_text())["retentionHours"] == 24
