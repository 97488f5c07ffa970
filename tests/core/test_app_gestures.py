# Button gestures from levels and times (firmware/app/gestures.py): fed like a poll loop would.
from firmware.app import gestures

WRAP = 0x40000000  # the ms counter period the module assumes


def run(edges, end, step=10, start=0, g=None):
    # Poll every `step` ms from `start` to `end`; the pin level follows `edges` [(t, level)]
    # (times relative to start). Returns [(t, gesture)] with relative times.
    g = g or gestures.new()
    out = []
    level = 0
    i = 0
    for t in range(0, end + 1, step):
        while i < len(edges) and edges[i][0] <= t:
            level = edges[i][1]
            i += 1
        for x in gestures.feed(g, level, (start + t) % WRAP):
            out.append((t, x))
    return out


def names(events):
    return [x for _, x in events]


CASES = [
    # (what, edges, end, gestures expected)
    ("nothing", [], 3000, []),
    ("single press", [(100, 1), (250, 0)], 1500, ["press"]),
    ("single press with bounce",
     [(100, 1), (103, 0), (106, 1), (109, 0), (112, 1), (300, 0), (304, 1), (308, 0)], 1500,
     ["press"]),
    ("glitch shorter than debounce", [(100, 1), (110, 0)], 1500, []),
    ("long press", [(100, 1), (2500, 0)], 4000, ["long"]),
    ("double press", [(100, 1), (200, 0), (400, 1), (500, 0)], 2000, ["double"]),
    ("double then held long is still one double", [(100, 1), (200, 0), (400, 1), (3000, 0)],
     4000, ["double"]),
    ("two presses too far apart", [(100, 1), (200, 0), (800, 1), (900, 0)], 2500,
     ["press", "press"]),
    ("press then long", [(100, 1), (200, 0), (1000, 1), (3000, 0)], 4000, ["press", "long"]),
    ("held at boot is no gesture", [(0, 1), (3000, 0)], 5000, []),
    ("triple press: double then a single", [(100, 1), (200, 0), (300, 1), (400, 0), (500, 1),
                                            (600, 0)], 2000, ["double", "press"]),
]


def test_gesture_table():
    for what, edges, end, want in CASES:
        got = names(run(edges, end))
        assert got == want, (what, got, want)


def test_timing_of_each_gesture():
    # long fires while still held, at 1500 ms; press 400 ms after the release.
    ev = run([(100, 1), (2500, 0)], 4000)
    assert ev == [(1600, "long")], ev
    ev = run([(100, 1), (250, 0)], 1500)
    assert ev == [(650, "press")], ev
    ev = run([(100, 1), (200, 0), (400, 1)], 1000)
    assert ev == [(430, "double")], ev   # confirmed after the 30 ms debounce


def test_counter_wraps():
    for start in (WRAP - 150, WRAP - 1000, WRAP - 2):
        for what, edges, end, want in CASES:
            got = names(run(edges, end, start=start))
            assert got == want, (start, what, got)


def test_edge_timestamps_and_slow_polling():
    # An IRQ records edges with their times; the loop feeds them late and polls rarely.
    g = gestures.new()
    assert gestures.feed(g, 0, 0) == ()
    assert gestures.feed(g, 1, 1000) == ()      # edge at 1000
    assert gestures.feed(g, 0, 1100) == ()      # edge at 1100 (press confirmed at 1100)
    assert gestures.feed(g, 1, 1450) == ()      # edge at 1450: 350 ms after the release
    # the loop comes back only at 1700: the pending press must not let the gap expire first
    assert gestures.feed(g, 1, 1700) == ("double",)
    assert gestures.feed(g, 0, 1800) == ()
    assert gestures.feed(g, 0, 5000) == ()


def test_late_poll_reports_each_gesture_when_it_is_due():
    g = gestures.new()
    gestures.feed(g, 0, 0)
    gestures.feed(g, 1, 100)
    gestures.feed(g, 0, 200)                    # released at 200: the gap runs to 600
    assert gestures.feed(g, 1, 900) == ("press",)   # next edge seen late: the gap was over
    assert gestures.feed(g, 1, 3000) == ("long",)
    assert gestures.feed(g, 0, 3100) == ()


def test_noise_never_breaks_it():
    # A pseudo-random level stream: only known gestures come out, and it never raises.
    g = gestures.new()
    x = 12345
    seen = set()
    for t in range(0, 200000, 7):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        for name in gestures.feed(g, (x >> 16) % 5 == 0 if (t // 3000) % 2 else (x >> 16) % 97 == 0, t):
            seen.add(name)
    assert seen <= {"press", "long", "double"}, seen
    assert g["phase"] in (gestures.IDLE, gestures.DOWN, gestures.GAP, gestures.DOWN2, gestures.HELD)


def test_custom_times_and_pressed_level_values():
    g = gestures.new(debounce_ms=0, long_ms=100, double_ms=50)
    got = []
    for t, level in ((0, 0), (10, True), (200, False), (300, 0)):
        got += gestures.feed(g, level, t)
    assert got == ["long"], got


def test_phase_table_only_moves_on_listed_pairs():
    # A release in IDLE (button held at boot) changes nothing.
    g = gestures.new()
    gestures.feed(g, 1, 0)
    before = g["phase"]
    assert gestures.feed(g, 0, 100) == () and g["phase"] == before == gestures.IDLE


def test_random_gestures_with_bounce_are_all_recognised():
    # A deterministic pseudo-random script of clean gestures, each edge with contact bounce.
    seed = [7]

    def rnd(lo, hi):
        seed[0] = (seed[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return lo + (seed[0] >> 8) % (hi - lo + 1)

    edges = []
    want = []
    t = 100

    def edge(at, level):
        for k in range(rnd(0, 3)):             # bounce: a few flips within 9 ms
            edges.append((at + 2 * k, level))
            edges.append((at + 2 * k + 1, 1 - level))
        edges.append((at + 9, level))

    for _ in range(60):
        kind = ("press", "long", "double")[rnd(0, 2)]
        want.append(kind)
        if kind == "press":
            edge(t, 1)
            t += rnd(60, 1000)
            edge(t, 0)
            t += rnd(500, 900)
        elif kind == "long":
            edge(t, 1)
            t += rnd(1600, 3000)
            edge(t, 0)
            t += rnd(100, 900)
        else:
            edge(t, 1)
            t += rnd(60, 300)
            edge(t, 0)
            t += rnd(60, 340)
            edge(t, 1)
            t += rnd(60, 2000)
            edge(t, 0)
            t += rnd(100, 900)
    got = names(run(edges, t + 1000, step=5))
    assert got == want, (got, want)
