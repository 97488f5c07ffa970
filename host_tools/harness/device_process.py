"""Run the real firmware (main.py on the unix MicroPython) as a subprocess and watch it.

Used by the demo, the benchmark and the integration tests:
    dev = DeviceProcess(tmp_path / "device").provision(hub, "button-1", key)
    dev.start()
    dev.wait(lambda e: e.get("link") == "online", what="online")
    dev.gesture("press")                       # appended to DIR/control, as a test script would
    dev.wait_screen("delivered")
    dev.stop()

The firmware prints one `EVT {json}` line per observable change (hal/unix.py); every wait
polls those with a deadline, nothing sleeps for a fixed time. Every line the device prints is
kept in DIR/device.log for the post-mortem.
"""
import json
import os
import signal
import subprocess
import threading
import time

from host_tools.files import write_atomic
from host_tools.processes import REPO
DEADLINE = 20
RESET_EXIT = 75     # the firmware's hal.reset() (firmware/hal/unix.py): power it on again


class NoMicroPython(RuntimeError):
    pass


def micropython():
    for path in (os.environ.get("MICROPYTHON"), os.path.join(REPO, ".venv", "bin", "micropython")):
        if path and os.path.exists(path):
            return path
    raise NoMicroPython("no unix MicroPython: run make setup, or build ports/unix and set MICROPYTHON= (see README)")


def code_folder():
    # $DEVICE_MPY: a folder of compiled .mpy (e.g. build/mpy from `make mpy`) to run instead
    # of the sources, as a device would (compiling .py at import needs far more heap).
    return os.environ.get("DEVICE_MPY") or REPO


def micropypath(code=None):
    # MICROPYPATH replaces the whole path: frozen modules first, as on the ESP32; the sources
    # stay last, for what a .mpy folder does not hold.
    code = code or code_folder()
    first = code + ":" if code != REPO else ""
    return ".frozen:%s%s:%s" % (first, os.path.join(REPO, ".mplib"), REPO)


class DeviceProcess:
    def __init__(self, folder, heapsize=None, env=None, on_line=None, code_dir=None, binary=None):
        self.dir = str(folder)
        self.binary = binary      # a micropython other than micropython() (e.g. the bench's 32-bit build)
        self.code_dir = code_dir  # run main.py and firmware/ from here (e.g. build/mpy); see code_folder()
        self.on_line = on_line    # called with every line the device prints (the demo shows them)
        os.makedirs(self.dir, exist_ok=True)
        # $DEVICE_HEAPSIZE (e.g. 128K) runs every device with an ESP32-like GC heap
        self.heapsize = heapsize or os.environ.get("DEVICE_HEAPSIZE")
        self.env = dict(env or {})
        self.proc = None
        self.events = []          # every EVT dict, in order, across restarts
        self.lines = []
        self.exit_codes = []
        self._ended = set()       # the processes whose exit the reader has handled (under _cond)
        self._cond = threading.Condition()
        self._log = open(os.path.join(self.dir, "device.log"), "a")

    # --- set-up ------------------------------------------------------------------------------

    def provision(self, hub, device_id, key, **config):
        cfg = {"host": hub.host, "port": hub.mqtt_port, "device_id": device_id,
               "ca_file": "ca.der", "retry_cap_s": 2}
        cfg.update(config)
        self.write("config.json", json.dumps(cfg))
        self.write("secrets.json", json.dumps({"device_key": key}), mode=0o600)
        with open(hub.ca_der, "rb") as f:
            self.write("ca.der", f.read())
        self.device_id = device_id
        return self

    def write(self, name, data, mode=0o644):
        write_atomic(os.path.join(self.dir, name), data, mode)

    # --- process -----------------------------------------------------------------------------

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._mark = len(self.events)
        return self._spawn()

    def _spawn(self):
        cmd = [self.binary or micropython()]
        if self.heapsize:
            cmd += ["-X", "heapsize=" + str(self.heapsize)]
        # the script's folder comes first on sys.path: run main.py from the code folder
        code = self.code_dir or code_folder()
        cmd.append(os.path.join(code, "main.py"))
        env = dict(os.environ, MICROPYPATH=micropypath(code), ORDER_DEVICE_DIR=self.dir)
        env.update(self.env)      # may set its own MICROPYPATH
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def _read(self, proc):
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._log.write(line + "\n")
            self._log.flush()
            if self.on_line:
                self.on_line(line)
            with self._cond:
                self.lines.append(line)
                if line.startswith("EVT "):
                    try:
                        self.events.append(json.loads(line[4:]))
                    except ValueError:
                        self.events.append({"unparsed": line})
                self._cond.notify_all()
        code = proc.wait()
        if proc.stdin:
            proc.stdin.close()
        with self._cond:
            # one step under the lock: a waiter sees either this process not yet handled, or
            # handled and (after a reset) already replaced by the next one, never in between
            self._ended.add(proc)
            if code == RESET_EXIT and proc is self.proc and not self._log.closed:
                self._spawn()       # the device reset itself (an update): power comes back
            self.exit_codes.append(code)
            self._cond.notify_all()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        # Ask politely ("quit" on the control file), then terminate, then kill.
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.gesture("quit")
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                return self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()

    def kill(self):
        # A power cut: SIGKILL, nothing gets flushed or closed.
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self):
        try:
            if self.running():
                self.proc.kill()
                self.proc.wait()
        finally:
            if self.proc is not None and self.proc.stdin:
                self.proc.stdin.close()
            self._log.close()

    # --- input ---------------------------------------------------------------------------------

    def gesture(self, word):
        # "press", "long", "double" or "quit", as a line appended to DIR/control.
        with open(os.path.join(self.dir, "control"), "a") as f:
            f.write(word + "\n")

    def key(self, text):
        # Keyboard input on stdin ("" = Enter = press, "l", "d", "q").
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()

    # --- waiting -------------------------------------------------------------------------------

    def mark(self):
        """An index into self.events: wait(..., since=mark) ignores what came before."""
        with self._cond:
            return len(self.events)

    def wait(self, pred, timeout=DEADLINE, what="event", since=None):
        """The first event (from `since`, default: this process's start) for which pred is true."""
        i = self._mark if since is None else since
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while i < len(self.events):
                    e = self.events[i]
                    i += 1
                    if pred(e):
                        return e
                # Over only once the reader has handled the end of *this* process: all of its
                # output is in, and a reset has been answered by powering it on again. That it
                # has exited (poll()) is not enough: a reset (75) seen before the reader takes
                # it would end the wait, as would an earlier process's exit code.
                if self.proc in self._ended and i >= len(self.events):
                    raise AssertionError("device exited (%s) while waiting for %s; last lines:\n%s"
                                         % (self.proc.returncode, what, self.tail()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %ss waiting for %s; last lines:\n%s"
                                         % (timeout, what, self.tail()))
                self._cond.wait(min(left, 0.5))

    def wait_screen(self, sid, timeout=DEADLINE, since=None):
        return self.wait(lambda e: e.get("screen") == sid, timeout, "screen " + sid, since)

    def wait_online(self, timeout=DEADLINE, since=None):
        return self.wait(lambda e: e.get("link") == "online", timeout, "link online", since)

    def absent(self, pred, seconds, since=None):
        """Watch for `seconds`; return the events (from `since`) for which pred is true."""
        i = self._mark if since is None else since
        deadline = time.monotonic() + seconds
        with self._cond:
            while time.monotonic() < deadline:
                self._cond.wait(max(0.0, min(deadline - time.monotonic(), 0.5)))
            return [e for e in self.events[i:] if pred(e)]

    def screens(self, since=0):
        with self._cond:
            return [e["screen"] for e in self.events[since:] if "screen" in e]

    def find(self, key, since=0):
        with self._cond:
            return [e for e in self.events[since:] if key in e]

    def tail(self, n=25):
        with self._cond:
            return "\n".join(self.lines[-n:])
