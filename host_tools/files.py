"""Atomic file writes (temp file + rename) with an explicit mode for files that hold secrets."""
import json
import os


def write_atomic(path, data, mode=0o644):
    if isinstance(data, str):
        data = data.encode()
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            fd = None
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    finally:
        if fd is not None:
            os.close(fd)
    os.replace(tmp, path)


def write_json(path, obj, mode=0o644):
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n", mode)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def load_json(path, what, error):
    """JSON from a file, or `error` with one line naming the file and what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise error(f"{what} {path} is not valid JSON: {exc}") from None
