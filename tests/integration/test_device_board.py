"""Board safety, on the real firmware (unix MicroPython, whose HAL reports the watchdog's start
and park as events; the ESP32 HAL does the same calls on machine.WDT): the watchdog starts only
once the app's loop runs, and a Ctrl-C (what mpremote sends) parks it before anything else."""
import os

from tests.integration.conftest import DEADLINE


def test_no_watchdog_while_waiting_for_setup_then_started_by_the_loop(device):
    dev = device("button-1")
    secrets = os.path.join(dev.dir, "secrets.json")
    with open(secrets) as f:
        kept = f.read()
    os.remove(secrets)
    dev.start()
    dev.wait(lambda e: "setup" in e, what="setup needed")
    dev.write("secrets.json", kept, mode=0o600)          # now the device can start its app
    started = dev.wait(lambda e: e.get("watchdog") == "started", what="watchdog started")
    dev.wait_online()
    events = dev.events
    i = events.index(started)
    assert not any("watchdog" in e for e in events[:i]), events[:i]
    assert any("setup" in e for e in events[:i])          # it waited for setup without one
    assert not any(e.get("link") == "online" for e in events[:i])   # the loop connects, after it
    assert [e for e in events if "watchdog" in e] == [started]


def test_ctrl_c_parks_the_watchdog_first_and_ends_cleanly(device):
    dev = device("button-1")
    dev.start()
    dev.wait_online()
    mark = dev.mark()
    # mpremote's Ctrl-C, as a board gets it: a KeyboardInterrupt raised in the loop (the unix
    # HAL's "interrupt" line). Not a SIGINT: the unix port raises that asynchronously, even in
    # the middle of a collection, and a whole make test run once ended with "heap is locked".
    dev.gesture("interrupt")
    dev.wait(lambda e: e.get("stopped") == "interrupted", since=mark, what="stopped")
    assert dev.proc.wait(DEADLINE) == 0, dev.tail()
    after = [e for e in dev.events[mark:] if "watchdog" in e or "stopped" in e]
    assert after[:2] == [{"watchdog": "parked", "t": after[0]["t"]},
                         {"stopped": "interrupted", "t": after[1]["t"]}], after
