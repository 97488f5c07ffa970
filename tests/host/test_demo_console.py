"""The demo on an 80x24 terminal: the display is redrawn in place, the status line stays in view.

What the terminal shows is computed by a small VT100 screen (the few sequences a terminal
program like this uses: cursor position, scrolling region, save/restore, erase), fed with
exactly the bytes the program wrote to a pseudo-terminal.
"""
import codecs
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from host_tools.harness.console import FRAME_ROWS, Console

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MICROPYTHON = os.environ.get("MICROPYTHON", os.path.join(REPO, ".venv", "bin", "micropython"))
_CSI = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])")


class Vt:
    """A cols x rows terminal screen: enough VT100 to check what a person sees."""

    def __init__(self, cols=80, rows=24):
        self.cols, self.rows = cols, rows
        self.grid = [[" "] * cols for _ in range(rows)]
        self.y = self.x = 0
        self.top, self.bottom = 0, rows - 1
        self.saved = (0, 0)

    def feed(self, text):
        i = 0
        while i < len(text):
            c = text[i]
            if c == "\x1b":
                m = _CSI.match(text, i)
                if m:
                    self._csi(m.group(1), m.group(2))
                    i = m.end()
                    continue
                if text[i + 1:i + 2] == "7":
                    self.saved = (self.y, self.x)
                elif text[i + 1:i + 2] == "8":
                    self.y, self.x = self.saved
                i += 2
                continue
            if c == "\n":          # the tty's ONLCR: a new line starts at column 1
                self.x = 0
                if self.y == self.bottom:
                    del self.grid[self.top]
                    self.grid.insert(self.bottom, [" "] * self.cols)
                elif self.y < self.rows - 1:
                    self.y += 1
            elif c == "\r":
                self.x = 0
            elif c >= " " and self.x < self.cols:
                self.grid[self.y][self.x] = c
                self.x += 1
            i += 1

    def _csi(self, params, cmd):
        n = [int(p) if p else 0 for p in params.split(";")] if params else []
        if cmd == "H":
            self.y = min(max((n[0] if n else 1) - 1, 0), self.rows - 1)
            self.x = min(max((n[1] if len(n) > 1 else 1) - 1, 0), self.cols - 1)
        elif cmd == "r":
            self.top, self.bottom = (n[0] - 1, n[1] - 1) if n else (0, self.rows - 1)
            self.y = self.x = 0
        elif cmd == "J" and n == [2]:
            self.grid = [[" "] * self.cols for _ in range(self.rows)]
        elif cmd == "K":
            self.grid[self.y][self.x:] = [" "] * (self.cols - self.x)

    def lines(self):
        return ["".join(row).rstrip() for row in self.grid]


class _FakeTty:
    def __init__(self):
        self.text = []

    def write(self, s):
        self.text.append(s)

    def flush(self):
        pass

    def isatty(self):
        return True


def _hal_output(screens):
    """What the unix HAL prints for these screens (frames and EVT lines), on MicroPython."""
    script = ("from firmware.hal.unix import Hal\nh = Hal(None, lambda year: 0)\n" +
              "".join("h.show(%r, %r)\n" % (sid, lines) for sid, lines in screens))
    env = dict(os.environ, MICROPYPATH=".frozen:" + REPO, ORDER_DEVICE_DIR="/tmp/h6-console-test")
    r = subprocess.run([MICROPYTHON, "-c", script], input="", capture_output=True, text=True,
                       timeout=60, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_frames_are_drawn_in_place_and_the_status_line_stays_at_80x24():
    lines = _hal_output([("ready", ["Ready", "Press to order"]),
                         ("accepted", ["Accepted", "ORD-000001"]),
                         ("shipped", ["Shipped", "ORD-000001"])])
    frames = [i for i, line in enumerate(lines) if line.startswith("+-")]
    assert len(frames) == 6 and frames[1] - frames[0] + 1 == FRAME_ROWS   # 18 rows a frame
    out = _FakeTty()
    vt = Vt()
    with Console(out=out, size=(80, 24)) as console:
        console.device_line('EVT {"link": "online"}')
        for line in lines:
            console.device_line(line)
        for i in range(40):                    # a busy log scrolls below, never over the display
            console.log("log line %d" % i)
        vt.feed("".join(out.text))
        screen = vt.lines()
    last = lines[frames[4]:frames[5] + 1]
    assert screen[0].startswith("Enter = order")
    assert screen[1:1 + FRAME_ROWS] == [row.rstrip() for row in last]     # the last frame, in place
    assert screen[FRAME_ROWS + 1] == "link online | shipped | Shipped / ORD-000001"
    assert screen[-1] == "log line 39" and screen[FRAME_ROWS + 2:] == ["log line %d" % i for i in range(36, 40)]


def test_elsewhere_every_line_is_printed_once():
    out = _FakeTty()
    out.isatty = lambda: False
    with Console(out=out, size=(80, 24)) as console:
        console.device_line("+---+")
        console.device_line("| x |")
        console.device_line("+---+")
        console.device_line('EVT {"screen": "ready", "lines": ["Ready", "", "x"]}')
        console.device_line("keys: Enter = press")
    text = "".join(out.text)
    assert "\x1b" not in text
    assert text.splitlines()[1:] == ["+---+", "| x |", "+---+", "link starting | ready | Ready / x",
                                     "keys: Enter = press"]


def test_the_interactive_demo_at_80x24_keeps_display_and_status_in_view(tmp_path):
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.chdir(REPO)
        for name in ("COLUMNS", "LINES"):   # the terminal's own size, 80x24, decides
            os.environ.pop(name, None)
        os.execv(sys.executable, [sys.executable, "-m", "host_tools", "demo", "--data", str(tmp_path),
                                  "--timeline", "payment_authorized=0.3,shipped=0.6,delivered=0.9"])
    vt, decode = Vt(), codecs.getincrementaldecoder("utf-8")(errors="replace")
    checked = []

    def pump(until, timeout=60, what=""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:          # the demo has exited
                    if until is None:
                        return vt.lines()
                    break
                vt.feed(decode.decode(chunk))
                screen = vt.lines()
                if screen[FRAME_ROWS + 1].startswith("link "):   # the status line, where it belongs
                    checked.append((screen[1].startswith("+-"), screen[FRAME_ROWS].startswith("+-")))
                if until is not None and until(screen):
                    return screen
        raise AssertionError("timed out waiting for %s; screen:\n%s" % (what, "\n".join(vt.lines())))

    try:
        pump(lambda s: s[FRAME_ROWS + 1].startswith("link online | ready"), what="ready")
        os.write(fd, b"\r")
        screen = pump(lambda s: "| delivered |" in s[FRAME_ROWS + 1], what="delivered")
        assert screen[0].startswith("Enter = order")
        assert screen[1].startswith("+-") and screen[FRAME_ROWS].startswith("+-")   # the whole display
        assert all(row.startswith("|") for row in screen[2:FRAME_ROWS])
        # from the first whole frame on, every screen had display and status line in place
        first = checked.index((True, True))
        assert all(c == (True, True) for c in checked[first:]), checked
        os.write(fd, b"q\r")
        pump(None, timeout=30, what="the demo to exit")
    finally:
        status = _reap(pid)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


def _reap(pid, timeout=30):
    """The demo's exit status; one still running is stopped as Ctrl-C would (its whole group)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGINT)
            deadline += timeout
        time.sleep(0.1)
