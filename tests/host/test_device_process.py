"""DeviceProcess, the harness that runs the firmware, driven with a fake firmware script.

The fake main.py resets itself (exit 75, as hal.reset() on the unix port) a few times, then
stays up; the harness must power it on again each time and never report the reset as an exit.
"""
import sys
import textwrap
import threading
import time

import pytest

from host_tools.harness.device_process import DeviceProcess

RESETS = 4
HOLD = 1.0      # longer than wait()'s longest sleep between checks (0.5 s), on any machine

FAKE_MAIN = textwrap.dedent("""
    import json, os, sys, time
    count = os.path.join(os.environ["ORDER_DEVICE_DIR"], "boots")
    n = int(open(count).read()) if os.path.exists(count) else 0
    open(count, "w").write(str(n + 1))
    print("EVT " + json.dumps({"boot": n}), flush=True)
    if n < %d:
        sys.exit(75)                    # reset me
    print("EVT " + json.dumps({"screen": "idle"}), flush=True)
    control = os.path.join(os.environ["ORDER_DEVICE_DIR"], "control")
    while not (os.path.exists(control) and "quit" in open(control).read()):
        time.sleep(0.02)                # the unix HAL polls its control file too
""" % RESETS)


class SlowRespawn(DeviceProcess):
    """The reader thread sees the end of output HOLD seconds late, so the harness notices the
    exit (and powers the device on again) long after the process is gone: a loaded machine."""

    def _read(self, proc):
        out = proc.stdout

        def late_eof():
            yield from out
            proc.wait()
            time.sleep(HOLD)

        proc.stdout = late_eof()
        try:
            super()._read(proc)
        finally:
            out.close()


@pytest.fixture
def fake_code(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text(FAKE_MAIN)
    return str(code)


def test_resets_are_powered_on_again_even_when_the_harness_notices_them_late(tmp_path, fake_code):
    dev = SlowRespawn(tmp_path / "device", code_dir=fake_code, binary=sys.executable)
    try:
        dev.start()
        dev.wait_screen("idle", timeout=RESETS * HOLD + 20)
        assert [e["boot"] for e in dev.find("boot")] == list(range(RESETS + 1))
        assert dev.exit_codes == [75] * RESETS
    finally:
        assert dev.stop() == 0
        dev.close()


def test_an_exit_that_is_not_a_reset_ends_the_wait_with_its_code(tmp_path, fake_code):
    dev = SlowRespawn(tmp_path / "device", code_dir=fake_code, binary=sys.executable)
    try:
        dev.start()
        dev.wait_screen("idle", timeout=RESETS * HOLD + 20)
        dev.gesture("quit")
        with pytest.raises(AssertionError, match=r"device exited \(0\) while waiting for screen never"):
            dev.wait_screen("never", timeout=RESETS * HOLD + 20)
        assert dev.exit_codes == [75] * RESETS + [0]
    finally:
        dev.close()
