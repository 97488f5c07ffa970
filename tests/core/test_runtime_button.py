# Gesture detection from raw levels (firmware/runtime/button.py): pure, both interpreters.
from firmware.runtime.button import Gestures


def _run(levels, start=0, step=10):
    # levels: list of (pressed, duration_ms); samples every `step` ms; returns gestures seen.
    g = Gestures()
    out = []
    t = start
    for pressed, dur in levels:
        end = t + dur
        while t < end:
            r = g.update(pressed, t & 0x3FFFFFFF)
            if r:
                out.append(r)
            t += step
    return out


def test_short_press_is_reported_after_double_window():
    assert _run([(False, 100), (True, 100), (False, 1000)]) == ["press"]


def test_long_press_reported_while_held_and_release_adds_nothing():
    assert _run([(False, 100), (True, 2000), (False, 1000)]) == ["long"]


def test_double_press():
    assert _run([(False, 50), (True, 100), (False, 150), (True, 100), (False, 1000)]) == ["double"]


def test_two_presses_far_apart_are_two_presses():
    assert _run([(True, 100), (False, 800), (True, 100), (False, 800)]) == ["press", "press"]


def test_bounce_shorter_than_debounce_is_ignored():
    levels = [(False, 100)]
    for _ in range(5):
        levels += [(True, 10), (False, 10)]
    levels.append((False, 1000))
    assert _run(levels, step=5) == []


def test_bouncy_press_still_one_press():
    levels = [(False, 100), (True, 10), (False, 10), (True, 10), (False, 5), (True, 200), (False, 1000)]
    assert _run(levels, step=5) == ["press"]


def test_ticks_wraparound():
    start = 0x40000000 - 300
    assert _run([(False, 100), (True, 100), (False, 1000)], start=start) == ["press"]
    assert _run([(False, 100), (True, 2000), (False, 100)], start=start) == ["long"]
