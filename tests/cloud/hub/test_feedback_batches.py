"""C2D feedback batching (host_tools/cloud/hub/amqp/feedback.py) on a real hub database, with the
clock passed in: batches of at most 64 records, closed at 64 or 15 s after the previous batch,
durable across a reopen, the statuses IoT Hub documents, and deleted devices' pending records
dropped. The official SDKs' view (uamqp receiving a batch) is in test_amqp_sdk.py."""
import json

import pytest

from host_tools.cloud.hub.amqp import feedback
from host_tools.cloud.hub.store import Store

T0 = 1_800_000_000.0


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "hub.sqlite3"))
    feedback.prepare(s)
    yield s
    s.close()


def c2d(store, device, mid, ack="full", ttl=3600, now=T0):
    props = [("$.mid", mid), ("$.to", "/devices/%s/messages/deviceBound" % device)]
    if ack:
        props.append(("iothub-ack", ack))
    store.enqueue_c2d(device, b"x", props, ttl=ttl, now=now)
    return store.db.execute("SELECT MAX(seq) FROM c2d").fetchone()[0]


def complete(store, seq):
    store.complete_c2d(seq)


def batches(store):
    """Every queued feedback message: [(message id, [records])]."""
    return [(mid, json.loads(body)) for _, mid, _, body in feedback.pending(store, limit=1000)]


def test_records_wait_for_the_window_then_go_in_one_message(store):
    store.add_device("d1")
    first = c2d(store, "d1", "m0")
    complete(store, first)
    assert feedback.sweep(store, now=T0) == 1            # nothing sent before: out at once
    [(_, records)] = batches(store)
    assert [r["originalMessageId"] for r in records] == ["m0"]
    feedback.completed(store, feedback.pending(store)[0][0])

    for i in range(1, 4):
        complete(store, c2d(store, "d1", "m%d" % i))
    assert feedback.sweep(store, now=T0 + 5) == 0        # 5 s after the last batch: they wait
    assert feedback.sweep(store, now=T0 + 14.9) == 0
    assert batches(store) == []
    assert feedback.sweep(store, now=T0 + 15) == 1       # 15 s from the last one sent
    [(_, records)] = batches(store)
    assert [r["originalMessageId"] for r in records] == ["m1", "m2", "m3"]
    for r in records:
        assert r["statusCode"] == r["description"] == "Success"
        assert r["deviceId"] == "d1"
        assert r["deviceGenerationId"] == store.get_device("d1")["generation_id"]
        assert set(r) == {"originalMessageId", "enqueuedTimeUtc", "statusCode", "description",
                          "deviceId", "deviceGenerationId"}


def test_64_records_close_a_batch_at_once_and_no_message_holds_more(store):
    for d in ("a", "b"):
        store.add_device(d)
    complete(store, c2d(store, "a", "first"))
    feedback.sweep(store, now=T0)                        # the window starts now
    seqs = [c2d(store, "a" if i < 40 else "b", "m%d" % i) for i in range(70)]
    for seq in seqs:
        complete(store, seq)
    assert feedback.sweep(store, now=T0 + 1) == 1        # 64 ready: closed without waiting
    sizes = [len(records) for _, records in batches(store)]
    assert sizes == [1, 64]
    assert feedback.sweep(store, now=T0 + 16) == 1       # the remaining 6 after the window
    sizes = [len(records) for _, records in batches(store)]
    assert sizes == [1, 64, 6]
    ids = [r["originalMessageId"] for _, records in batches(store) for r in records]
    assert ids == ["first"] + ["m%d" % i for i in range(70)]   # each once, in order


def test_statuses_follow_the_ack_asked_for(store):
    store.add_device("d1")
    ok_full = c2d(store, "d1", "ok-full", ack="full")
    ok_pos = c2d(store, "d1", "ok-pos", ack="positive")
    ok_neg = c2d(store, "d1", "ok-neg", ack="negative")
    c2d(store, "d1", "exp-neg", ack="negative", ttl=10)
    c2d(store, "d1", "exp-pos", ack="positive", ttl=10)
    c2d(store, "d1", "exp-none", ack=None, ttl=10)
    for seq in (ok_full, ok_pos, ok_neg):
        complete(store, seq)
    feedback.sweep(store, now=T0 + 20, window=0)
    records = {r["originalMessageId"]: r for _, rs in batches(store) for r in rs}
    assert set(records) == {"ok-full", "ok-pos", "exp-neg"}
    assert records["exp-neg"]["statusCode"] == "Expired"
    assert records["exp-neg"]["enqueuedTimeUtc"] == feedback._utc(T0 + 10)   # when it expired


def test_purged_queue_gives_purged_records(store):
    store.add_device("d1")
    c2d(store, "d1", "p1", ack="negative")
    c2d(store, "d1", "p2", ack="positive")
    store.purge_c2d("d1")                                # what a CleanSession=1 connect does
    feedback.sweep(store, now=T0, window=0)
    [(_, records)] = batches(store)
    assert [(r["originalMessageId"], r["statusCode"]) for r in records] == [("p1", "Purged")]


def test_dead_lettered_message_gives_delivery_count_exceeded(store):
    store.add_device("d1")
    seq = c2d(store, "d1", "dl")
    store.db.execute("UPDATE c2d SET delivery_count=10 WHERE seq=?", (seq,))   # 10 abandons
    store.visible_c2d("d1", now=T0 + 1)                  # the hub sets it aside on the next look
    feedback.sweep(store, now=T0 + 1, window=0)
    [(_, [record])] = batches(store)
    assert record["statusCode"] == "DeliveryCountExceeded"


def test_pending_records_and_unaccepted_batches_survive_a_reopen(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    s = Store(path)
    feedback.prepare(s)
    s.add_device("d1")
    complete_seq = c2d(s, "d1", "sent")
    s.complete_c2d(complete_seq)
    feedback.sweep(s, now=T0)                            # batch 1 (never accepted)
    s.complete_c2d(c2d(s, "d1", "waiting"))
    feedback.sweep(s, now=T0 + 1)                        # a record, waiting for the window
    s.close()

    s = Store(path)
    feedback.prepare(s)
    assert [[r["originalMessageId"] for r in rs] for _, rs in batches(s)] == [["sent"]]
    assert feedback.sweep(s, now=T0 + 15) == 1
    assert [[r["originalMessageId"] for r in rs] for _, rs in batches(s)] == [["sent"], ["waiting"]]
    s.close()


def test_settlement_expiry_and_dead_lettering_of_feedback_messages(store):
    store.add_device("d1")
    for mid in ("a", "b", "c"):
        complete(store, c2d(store, "d1", mid))
        feedback.sweep(store, now=T0 + {"a": 0, "b": 20, "c": 40}[mid])
    (a, *_), (b, *_), (c, *_) = feedback.pending(store)
    feedback.completed(store, a)
    for _ in range(feedback.MAX_DELIVERY - 1):
        feedback.abandoned(store, b)
    assert [x[0] for x in feedback.pending(store)] == [b, c]     # abandoned: queued again
    feedback.abandoned(store, b)                                  # the 10th: dead-lettered
    assert [x[0] for x in feedback.pending(store)] == [c]
    feedback.sweep(store, now=T0 + 40 + feedback.TTL)             # unaccepted for an hour: expired
    assert feedback.pending(store) == []
    assert feedback.pending(store, exclude={c}) == []


def test_a_deleted_devices_pending_feedback_is_dropped(store):
    store.add_device("gone")
    store.add_device("kept")
    complete(store, c2d(store, "kept", "first"))
    feedback.sweep(store, now=T0)
    complete(store, c2d(store, "gone", "g1"))
    complete(store, c2d(store, "kept", "k1"))
    feedback.sweep(store, now=T0 + 1)                    # records made, waiting for the window
    store.remove_device("gone")
    store.add_device("gone")                             # same id, a new device generation
    feedback.sweep(store, now=T0 + 15)
    ids = [r["originalMessageId"] for _, rs in batches(store) for r in rs]
    assert ids == ["first", "k1"]


def test_feedback_message_carries_what_the_sdks_read():
    from proton import Message
    from host_tools.cloud.hub.amqp.endpoints import feedback_message
    body = json.dumps([{"originalMessageId": "m"}]).encode()
    msg = Message()
    msg.decode(feedback_message("mid-1", T0, body, "local").encode())
    assert msg.content_type == feedback.CONTENT_TYPE
    assert msg.id == "mid-1" and msg.user_id == b"local"
    assert msg.annotations["iothub-enqueuedtime"] == int(T0 * 1000)
    assert json.loads(bytes(msg.body)) == [{"originalMessageId": "m"}]


def test_records_queued_by_a_hub_from_before_batching_go_out_batched(tmp_path):
    s = Store(str(tmp_path / "hub.sqlite3"))
    s.add_device("d1")
    gen = s.get_device("d1")["generation_id"]
    s.db.executescript("""CREATE TABLE c2d_feedback (id INTEGER PRIMARY KEY AUTOINCREMENT,
        c2d_seq INTEGER NOT NULL UNIQUE, body BLOB NOT NULL, state TEXT NOT NULL DEFAULT 'queued',
        created REAL NOT NULL);""")
    for i, state in enumerate(("delivered", "queued", "queued")):   # one record per message then
        record = {"originalMessageId": "old%d" % i, "statusCode": "Success", "description": "Success",
                  "deviceId": "d1", "deviceGenerationId": gen, "enqueuedTimeUtc": "2027-01-15T08:00:00.000Z"}
        s.db.execute("INSERT INTO c2d_feedback (c2d_seq, body, state, created) VALUES (?,?,?,?)",
                     (100 + i, json.dumps([record]).encode(), state, T0))
    feedback.prepare(s)
    assert feedback.sweep(s, now=T0) == 1
    assert [[r["originalMessageId"] for r in rs] for _, rs in batches(s)] == [["old1", "old2"]]
    s.close()


def _c2d_rows(store):
    return [tuple(r) for r in store.db.execute("SELECT message_id, state FROM c2d ORDER BY seq")]


def test_settled_messages_are_deleted_and_their_feedback_made_once_across_a_restart(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    s = Store(path)
    feedback.prepare(s)
    s.add_device("d1")
    for i in range(5):
        s.complete_c2d(c2d(s, "d1", "done%d" % i))       # asked for feedback
    s.complete_c2d(c2d(s, "d1", "quiet", ack=None))      # asked for none
    c2d(s, "d1", "exp", ack="negative", ttl=10)          # expires at T0 + 10
    c2d(s, "d1", "live")                                 # still queued: stays
    assert feedback.record_step(s, now=T0 + 1, limit=4) == 4          # one chunk, then "power cut"
    assert _c2d_rows(s) == [("done4", "completed"), ("quiet", "completed"), ("exp", "queued"),
                            ("live", "queued")]
    s.close()

    s = Store(path)
    feedback.prepare(s)
    assert feedback.sweep(s, now=T0 + 20, window=0) == 1
    assert _c2d_rows(s) == [("live", "queued")]          # settled rows gone, the queued one kept
    feedback.sweep(s, now=T0 + 40, window=0)             # nothing new: no second record
    s.close()

    s = Store(path)
    feedback.prepare(s)
    feedback.sweep(s, now=T0 + 60, window=0)
    records = [(r["originalMessageId"], r["statusCode"]) for _, rs in batches(s) for r in rs]
    assert records == [("done%d" % i, "Success") for i in range(5)] + [("exp", "Expired")]
    assert _c2d_rows(s) == [("live", "queued")]
    s.close()


def test_record_step_takes_settled_rows_in_chunks(store):
    store.add_device("d1")
    for i in range(5):
        store.complete_c2d(c2d(store, "d1", "m%d" % i, ack=None))
    assert [feedback.record_step(store, now=T0, limit=2) for _ in range(4)] == [2, 2, 1, 0]
    assert _c2d_rows(store) == []


def test_a_settled_row_whose_record_an_older_hub_made_gets_no_second_one(store):
    store.add_device("d1")
    seq = c2d(store, "d1", "old")
    store.complete_c2d(seq)
    store.db.execute("INSERT INTO c2d_feedback (c2d_seq, body, state, created) VALUES (?,?,?,?)",
                     (seq, b"", "none", T0))             # an older hub kept settled rows
    feedback.sweep(store, now=T0, window=0)
    assert batches(store) == []
    assert _c2d_rows(store) == []


def _one_batch(store, mid="m"):
    store.add_device("d1")
    complete(store, c2d(store, "d1", mid))
    feedback.sweep(store, now=T0, window=0)
    [(fid, *_)] = feedback.pending(store, now=T0)
    return fid


def test_a_taken_batch_is_locked_until_settled_or_its_lock_expires(store):
    fid = _one_batch(store)
    [(got, token, *_)] = feedback.take(store, "https", now=T0, lock_seconds=60)
    assert got == fid and feedback.locked(store, token, now=T0 + 59) == fid
    assert feedback.take(store, "amqp", now=T0 + 59) == []              # invisible to every reader
    assert feedback.pending(store, now=T0 + 59) == []
    assert feedback.unlock_expired(store, now=T0 + 59) == 0
    assert feedback.unlock_expired(store, now=T0 + 60) == 1              # the lock expired: visible
    assert feedback.locked(store, token, now=T0 + 60) is None
    [(_, again, *_)] = feedback.take(store, "amqp", now=T0 + 61, lock_seconds=60)
    assert again != token
    assert not feedback.completed(store, fid, token, now=T0 + 62)       # the old holder: nothing
    assert not feedback.abandoned(store, fid, token, now=T0 + 62)
    assert feedback.completed(store, fid, again, now=T0 + 62)           # the new holder completes it
    assert feedback.take(store, "https", now=T0 + 200) == []


def test_a_lock_expiry_counts_no_delivery_an_abandon_does(store):
    fid = _one_batch(store)
    for n in range(feedback.MAX_DELIVERY):
        [(_, token, *_)] = feedback.take(store, "https", now=T0 + n, lock_seconds=0.5)
        if n % 2:
            feedback.unlock_expired(store, now=T0 + n + 1)                # expiry: not counted
        else:
            assert feedback.abandoned(store, fid, token, now=T0 + n)      # visible again at once
    # 5 abandons so far: 5 more before it is dead-lettered
    for n in range(5):
        [(_, token, *_)] = feedback.take(store, "https", now=T0 + 100 + n)
        feedback.abandoned(store, fid, token, now=T0 + 100 + n)
    assert feedback.take(store, "https", now=T0 + 200) == []


def test_a_released_batch_is_visible_at_once_and_a_reopen_releases_amqp_locks_only(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    s = Store(path)
    feedback.prepare(s)
    s.add_device("d1")
    for mid, at in (("a", T0), ("b", T0 + 20)):
        s.complete_c2d(c2d(s, "d1", mid))
        feedback.sweep(s, now=at)
    [(a, amqp_token, *_)] = feedback.take(s, "amqp", now=T0 + 21)
    feedback.release(s, [amqp_token])                                  # its connection ended
    assert [x[0] for x in feedback.pending(s, now=T0 + 21)][0] == a
    (_, amqp_token, *_), (b, https_token, *_) = feedback.take(s, "amqp", limit=1, now=T0 + 21) + \
        feedback.take(s, "https", limit=1, now=T0 + 21)
    s.close()

    s = Store(path)
    feedback.prepare(s)                                                # a hub restart
    assert feedback.locked(s, amqp_token, now=T0 + 22) is None          # its AMQP reader is gone
    assert feedback.locked(s, https_token, now=T0 + 22) == b            # the HTTPS reader's holds
    assert [x[0] for x in feedback.pending(s, now=T0 + 22)] == [a]
    s.close()
