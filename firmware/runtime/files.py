# Files on the device: atomic writes and reads that survive a cut write (the running device's
# only file I/O; storage.py reads the setup files with these).
#
# A power cut mid-write must lose nothing: data goes to NAME.tmp, is flushed (fsync where the
# port has it), then renamed over NAME.
import os


def join(folder, name):
    return folder + "/" + name if folder else name


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if hasattr(os, "fsync"):
            os.fsync(f.fileno())
    try:
        os.rename(tmp, path)
    except OSError:
        # a filesystem that will not rename over a file (FAT): the .tmp is still complete,
        # and read_bytes() falls back to it if the power goes between these two lines
        _remove(path)
        os.rename(tmp, path)


def read_bytes(path):
    # None when the file does not exist.
    for p in (path, path + ".tmp"):
        try:
            with open(p, "rb") as f:
                return f.read()
        except OSError:
            pass
    return None
