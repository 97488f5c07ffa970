"""Atomic file writes (temp file + rename) with an explicit mode for files that hold secrets."""
import json
import os


def write_atomic(path, data, mode=0o644):
    os.replace(_write_tmp(path, data, mode), path)


def _write_tmp(path, data, mode):
    """Write data to path + ".tmp" (mode set before the data goes in, synced); return that name."""
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
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return tmp


class Staging:
    """Files for one folder, written under temporary names and put in place together.

        with Staging(folder, "device folder") as stage:   # makes the folder if need be
            stage.add("config.json", text)
            ...                                            # any failure: nothing is left behind
            stage.commit()                                 # the renames

    Leaving the block without commit() (an exception) removes the temporary files and the
    folders made for them, so a command that fails part way leaves the folder as it was."""

    def __init__(self, folder, what):
        self.folder, self.what = folder, what
        self._created = make_dirs(folder, what)
        self._staged = []

    def add(self, name, data, mode=0o644):
        final = os.path.join(self.folder, name)
        try:
            self._staged.append((_write_tmp(final, data, mode), final))
        except OSError as exc:
            from host_tools.errors import CliError
            raise CliError(f"cannot write {final}: {exc.strerror}") from None

    def commit(self):
        for tmp, final in self._staged:
            os.replace(tmp, final)
        self._staged, self._created = [], []

    def discard(self):
        for tmp, _ in self._staged:
            try:
                os.remove(tmp)
            except OSError:
                pass
        self._staged = []
        remove_dirs(self._created)
        self._created = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.discard()   # after commit() there is nothing left to discard


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


def make_dirs(path, what, mode=0o755):
    """Create folder `path` and its missing parents; a one-line CliError when that cannot be.

    Returns the folders it created, innermost first, so that a caller whose later step fails
    can remove them again (remove_dirs) and leave nothing behind."""
    from host_tools.errors import CliError
    created, cur = [], os.path.abspath(path)
    while not os.path.isdir(cur):
        if os.path.lexists(cur):
            raise CliError(f"{what} {path}: {cur} exists and is not a folder")
        created.append(cur)
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    for folder in reversed(created):
        try:
            os.mkdir(folder, mode)
        except OSError as exc:
            remove_dirs(created)
            raise CliError(f"cannot create {what} {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CliError(f"cannot write to {what} {path}: permission denied")
    return created


def remove_dirs(folders):
    """Undo make_dirs: remove the folders it created that are (still) empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            pass
