"""The demo's terminal: the button's display redrawn in place, a status line, a log below.

On a terminal of at least 68x22 (80x24 is the rule), the screen is laid out once:

    row 1        what the keys do
    rows 2-19    the display, as the firmware draws it (its 18-row frame), redrawn in place
    row 20       the status line: the link's state, the screen the display shows, its text
    rows 21-     a scrolling log (the demo's messages, what the device says besides frames)

Only the log scrolls (a scrolling region), so the display and the status line are always in
view. Elsewhere (a pipe, a file, a small window) every line is printed as it comes, a frame
once per change. Fed from the device's reader thread and the demo: every method is locked.
"""
import json
import shutil
import sys
import threading

ESC = "\x1b["
FRAME_ROWS = 18        # hal/unix.py terminal(): an edge, 16 rows of 2x4 pixels, an edge
HEADER = "Enter = order   l Enter = cancel   d Enter = status   q Enter or Ctrl-C = quit"


class Console:
    def __init__(self, out=None, verbose=False, size=None):
        self.out = out or sys.stdout
        self.verbose = verbose
        cols, rows = size or shutil.get_terminal_size((0, 0))
        self.fixed = _isatty(self.out) and rows >= FRAME_ROWS + 4 and cols >= 68
        self.rows, self.cols = rows, cols
        self._lock = threading.Lock()
        self._frame = None      # rows of the frame being received
        self._screen = ("", [])
        self._link = "starting"

    # ---- lifetime -----------------------------------------------------------------------
    def __enter__(self):
        if self.fixed:
            with self._lock:
                # clear, then let only the rows below the status line scroll
                self._write(ESC + "2J" + ESC + "H" + _fit(HEADER, self.cols) + "\n")
                self._write(ESC + "%d;%dr" % (FRAME_ROWS + 3, self.rows))
                self._status_line()
                self._write(ESC + "%d;1H" % self.rows)
                self.out.flush()
        else:
            self.log(HEADER)
        return self

    def __exit__(self, *exc):
        if self.fixed:
            with self._lock:
                self._write(ESC + "r" + ESC + "%d;1H\n" % self.rows)   # whole screen scrolls again
                self.out.flush()

    # ---- input ------------------------------------------------------------------------------
    def device_line(self, line):
        """One line the firmware printed: a frame row, an EVT line or anything else."""
        if line.startswith("+-") and line.endswith("-+"):
            if self._frame is None:
                self._frame = [line]
                return
            self._show_frame(self._frame + [line])
            self._frame = None
            return
        if self._frame is not None and line.startswith("|"):
            self._frame.append(line)
            return
        if line.startswith("EVT "):
            self._event(line)
            return
        self.log(line)

    def log(self, text):
        with self._lock:
            if self.fixed:
                # save the cursor, write at the bottom of the scrolling region, restore
                self._write("\x1b7" + ESC + "%d;1H\n" % self.rows + _fit(text, self.cols) + "\x1b8")
            else:
                self._write(text + "\n")
            self.out.flush()

    # ---- drawing ----------------------------------------------------------------------------
    def _event(self, line):
        try:
            e = json.loads(line[4:])
        except ValueError:
            return self.log(line)
        changed = False
        if "screen" in e:
            self._screen = (e["screen"], [s.strip() for s in e.get("lines", []) if s.strip()])
            changed = True
        if "link" in e:
            self._link = e["link"]
            changed = True
        if self.verbose:
            self.log(line)
        if changed:
            with self._lock:
                if self.fixed:
                    self._write("\x1b7")
                    self._status_line()
                    self._write("\x1b8")
                    self.out.flush()
                elif "screen" in e:
                    self._write(self.status_text() + "\n")
                    self.out.flush()

    def status_text(self):
        sid, lines = self._screen
        return "link %s | %s | %s" % (self._link, sid or "-", " / ".join(lines) or "-")

    def _status_line(self):
        self._write(ESC + "%d;1H" % (FRAME_ROWS + 2) + ESC + "7m" + _fit(self.status_text(), self.cols)
                    + ESC + "0m" + ESC + "K")

    def _show_frame(self, rows):
        with self._lock:
            if not self.fixed:
                self._write("\n".join(rows) + "\n")
            else:
                self._write("\x1b7")
                for i, row in enumerate(rows[:FRAME_ROWS]):
                    self._write(ESC + "%d;1H" % (i + 2) + row + ESC + "K")
                self._write("\x1b8")
            self.out.flush()

    def _write(self, text):
        self.out.write(text)


def _fit(text, cols):
    return text if len(text) < cols else text[:max(cols - 1, 0)]


def _isatty(out):
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False
