# Hardware for the Unix MicroPython port (and a developer's terminal).
#
# Button: the keyboard (Enter = press, "l" Enter = long press, "d" Enter = double press,
#   "q" Enter = quit) and, for tests and scripts, lines appended to DIR/control
#   ("press", "long", "double", "quit", "interrupt": Ctrl-C as mpremote sends it to a
#   board, and "oom": the next C2D message's handler runs out of memory, as on a fragmented
#   heap); only lines written after start-up count.
# Screen: the 128x64 display's framebuf, drawn exactly as on the SSD1306 (hal/base.draw) and
#   printed in a frame of 18 rows (2x4 pixels per character), when it changes. With
#   $ORDER_DEVICE_DISPLAY=framebuf it is driven as the ESP32 drives its SSD1306 instead (what
#   `make bench` measures): the framebuf drawn, then its 1024 bytes written in one write per
#   refresh, to DIR/display.fb (opened once), and no frame printed.
# Events: one `EVT {json}` line on stdout per observable change, for integration tests.
# Storage: the folder in $ORDER_DEVICE_DIR (default .local/device).
# Clock: the host clock, shifted by $ORDER_DEVICE_TIME_OFFSET seconds (to test an unset or wrong
#   clock). sync_time() stands for NTP: it answers only with $ORDER_DEVICE_NTP set, and then
#   sets the clock to the host's.
import framebuf
import json
import os
import select
import sys
import time
from firmware.hal.base import BaseHal, draw

PLATFORM = "unix"
RESET_EXIT = 75     # exit status of reset(): "start me again"
_WORDS = {"": "press", "p": "press", "press": "press", "l": "long", "long": "long",
          "d": "double", "double": "double", "q": "quit", "quit": "quit"}


def _makedirs(path):
    cur = ""
    for part in path.split("/"):
        cur = cur + "/" + part if cur or path.startswith("/") else part
        if part and not _isdir(cur):
            os.mkdir(cur)


def _isdir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


class Hal(BaseHal):
    def __init__(self, gestures, epoch_offset):
        # The same arguments as the ESP32's Hal: the keyboard and control file give gestures
        # directly, so `gestures` (the button's gesture machine) is not needed here.
        self.storage_dir = os.getenv("ORDER_DEVICE_DIR") or ".local/device"
        _makedirs(self.storage_dir)
        self._epoch = epoch_offset(time.gmtime(0)[0])
        self._offset = self._epoch + float(os.getenv("ORDER_DEVICE_TIME_OFFSET") or 0)
        self._ntp = bool(os.getenv("ORDER_DEVICE_NTP"))
        self._control = self.storage_dir + "/control"
        try:
            self._control_pos = os.stat(self._control)[6]
        except OSError:
            self._control_pos = 0
        self._poll = select.poll()
        self._stdin = True
        self._poll.register(sys.stdin, select.POLLIN)    # plus the link's socket: BaseHal._watch
        self._screen = None
        buf = bytearray(128 * 64 // 8)
        self._fb = framebuf.FrameBuffer(buf, 128, 64, framebuf.MONO_VLSB)
        self._panel = None
        if os.getenv("ORDER_DEVICE_DISPLAY") == "framebuf":
            self._panel = (open(self.storage_dir + "/display.fb", "wb"), buf)
        self._gestures = []
        self._oom = False

    # now(), rand(), random_bytes() and mem_free() come from BaseHal.

    # --- the network is the host's ---------------------------------------------------------

    def configure(self, cfg, secrets):
        pass

    def network_up(self, timeout_s=0):
        return True

    def sync_time(self):
        # -> whether "NTP" answered
        if self._ntp:
            self._offset = self._epoch
        return self._ntp

    # The watchdog is the ESP32's; here its start and park are events, so tests see the order.
    def watchdog_start(self):
        self.event(watchdog="started")

    def watchdog_park(self):
        self.event(watchdog="parked")

    def crash(self, e):
        # An unexpected error: on a PC, show it and stop (exit status 1).
        raise e

    def reboot(self):
        # A soft restart: device.run() starts a fresh Device in this process.
        self.event(reboot=True)

    def reset(self):
        # A power cycle, after an update or a rollback (the next boot picks the version, with a
        # fresh heap as on an ESP32): the process ends with status RESET_EXIT and whoever runs it
        # starts it again (host_tools/harness/device_process.py does, as power coming back would).
        self.event(reset=True)
        sys.exit(RESET_EXIT)

    # --- button ------------------------------------------------------------------------------

    def wait(self, ms, wake=None):
        # Sleep up to `ms`, waking early for a gesture (keyboard or control file, checked
        # every 100 ms) or when `wake` (a socket) is readable; returns the gestures seen.
        self._watch(wake)
        end = time.ticks_add(time.ticks_ms(), ms)
        while True:
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0 or self._gestures:
                break
            slice_ms = min(left, 100)
            if self._stdin or wake is not None:
                woke = False
                for ready in self._poll.ipoll(slice_ms):   # ipoll: no list allocated per call
                    if ready[0] is not sys.stdin:
                        woke = True
                        continue
                    line = sys.stdin.readline()
                    if not line:            # end of input: stop watching it
                        self._poll.unregister(sys.stdin)
                        self._stdin = False
                        break
                    self._word(line)
                if woke:
                    self._read_control()
                    break
            else:
                time.sleep_ms(slice_ms)
            self._read_control()
        if not self._gestures:
            return ()       # nothing pressed (nearly always): no new list every loop turn
        g, self._gestures = self._gestures, []
        return g

    def _word(self, line):
        g = _WORDS.get(line.strip().lower())
        if g:
            self._gestures.append(g)
        elif line.strip() == "interrupt":
            # Ctrl-C as an ESP32 gets it from mpremote: a KeyboardInterrupt raised in the loop.
            # A unix SIGINT is raised asynchronously, even inside a collection or a finaliser,
            # where it can leave the heap locked or be swallowed: no model of the board.
            raise KeyboardInterrupt
        elif line.strip() == "oom":
            self._oom = True
        else:
            print("keys: Enter = press, l = long press, d = double press, q = quit")

    def _read_control(self):
        try:
            size = os.stat(self._control)[6]
        except OSError:
            return
        if size < self._control_pos:     # truncated: start over
            self._control_pos = 0
        if size == self._control_pos:
            return
        with open(self._control, "rb") as f:
            f.seek(self._control_pos)
            data = f.read(size - self._control_pos)
        end = data.rfind(b"\n") + 1      # only whole lines
        self._control_pos += end
        for line in data[:end].decode().split("\n")[:-1]:
            self._word(line)

    # --- screen, LED, events -----------------------------------------------------------------

    def show(self, sid, lines):
        lines = [str(s)[:16] for s in lines[:4]]
        if (sid, lines) == self._screen:
            return
        self._screen = (sid, lines)
        draw(self._fb, lines)
        if self._panel:
            f, buf = self._panel
            f.seek(0)
            f.write(buf)    # the SSD1306's one I2C write of the buffer
        else:
            from firmware.hal.terminal import terminal   # a developer's terminal only
            terminal(self._fb, sys.stdout.buffer.write)
        self.event(screen=sid, lines=lines)

    def brightness(self, level):
        self.event(brightness=level)

    def flash(self, seconds):
        self.event(flash=seconds)

    def safe_mode(self):
        return False

    def event(self, **fields):
        fields["t"] = self.now()
        print("EVT " + json.dumps(fields))
        if self._oom and "c2d" in fields:
            # "oom": the device's handler (the link's caller) fails as it would with no block
            # left for the message; the event line above tells which message it was
            self._oom = False
            raise MemoryError("oom (control file)")
