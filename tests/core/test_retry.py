# Backoff and retry classification. Runs under pytest and under the unix MicroPython.
from firmware.iothub import retry


def test_delay_grows_exponentially_and_is_capped():
    lows = [retry.delay(a, 0.0, base=1, cap=60) for a in range(10)]
    highs = [retry.delay(a, 0.999999, base=1, cap=60) for a in range(10)]
    assert lows[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert all(lo == 30.0 for lo in lows[6:])
    assert all(h < 60.0 for h in highs) and highs[-1] > 59.9


def test_delay_is_never_zero_and_jitter_spreads_it():
    for attempt in range(40):
        for rand in (0.0, 0.25, 0.5, 0.99):
            d = retry.delay(attempt, rand, base=2, cap=300)
            assert 0 < d <= 300
    assert retry.delay(3, 0.1) != retry.delay(3, 0.9)


def test_huge_attempt_numbers_do_not_overflow():
    assert retry.delay(10 ** 6, 0.5, base=1, cap=300) == 225.0


def test_delay_for_each_kind_is_longer_for_worse_problems():
    soon, later, auth, fatal = (retry.delay_for(k, 0, 0.0)
                                for k in (retry.SOON, retry.LATER, retry.AUTH, retry.FATAL))
    assert soon < later < auth < fatal
    # credentials refused: at most one attempt per half minute even on the first retry
    assert retry.delay_for(retry.AUTH, 0, 0.0) >= 30
    assert retry.delay_for("unknown kind", 0, 0.0) == fatal


def test_classify_connack():
    table = {0: retry.OK, 1: retry.FATAL, 2: retry.FATAL, 3: retry.LATER,
             4: retry.AUTH, 5: retry.AUTH, 6: retry.FATAL, 255: retry.FATAL}
    for code, kind in table.items():
        assert retry.classify_connack(code) == kind


def test_classify_status():
    table = {200: retry.OK, 204: retry.OK, 400: retry.FATAL, 401: retry.AUTH, 403: retry.AUTH,
             404: retry.FATAL, 429: retry.LATER, 500: retry.SOON, 503: retry.LATER, 504: retry.SOON}
    for status, kind in table.items():
        assert retry.classify_status(status) == kind


def test_backoff_retries_later_by_what_the_status_means():
    b = retry.Backoff()
    assert b.due == 0
    w429 = b.fail(1000, 429, 0.5)       # throttled: the LATER policy, 7.5..15 s first
    assert 7.5 <= w429 <= 15 and b.due == 1000 + w429 and b.attempt == 1
    w2 = b.fail(2000, 429, 0.5)          # and it grows
    assert w2 > w429
    b.ok()
    assert (b.due, b.attempt) == (0, 0)
    w500 = b.fail(3000, 500, 0.0)        # a server error: soon (0.5 s first)
    assert 0.5 <= w500 <= 1
    for r in (0.0, 0.999):               # jitter: never zero, never past the cap
        c = retry.Backoff()
        for _ in range(30):
            w = c.fail(0, 503, r)
        assert 150 <= w <= 300
