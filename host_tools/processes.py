"""Host services as child processes: `python -m host_tools hub|orders serve` and friends.

A service prints one JSON line on stdout when it is ready (ports and such); start() waits for
it with a deadline and returns it, stop() asks with SIGTERM and kills only if it must.
"""
import json
import os
import selectors
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ServiceFailed(Exception):
    pass


def start(args, log_path, timeout=30, name=None):
    """Start `python -m host_tools ARGS`; return (process, the JSON its ready line holds)."""
    name = name or " ".join(args[:2])
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    log = open(log_path, "ab")
    since = log.tell()   # errors quote only what this run wrote, never an older run's text
    proc = subprocess.Popen([sys.executable, "-m", "host_tools", *args], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    log.close()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline, buf = time.monotonic() + timeout, b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        chunk = os.read(proc.stdout.fileno(), 4096) if left > 0 and sel.select(left) else b""
        if not chunk:
            stop(proc)
            raise ServiceFailed(f"{name} did not start (see {log_path}): {_tail(log_path, since)}")
        buf += chunk
    sel.close()
    try:
        return proc, json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        stop(proc)
        raise ServiceFailed(f"{name} printed no ready line (see {log_path})") from None


def stop(proc, timeout=10):
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
    return proc.returncode


def _tail(path, since=0, n=3):
    """The last n lines written to the log at `path` after offset `since`, on one line."""
    try:
        with open(path, "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-n:] if line.strip()) or "it printed nothing"
