# Peak RSS of this process, for the bench's clients on CPython and MicroPython alike.


def peak_rss_kib():
    # VmHWM: this process's own peak RSS since exec (a child's ru_maxrss would also count the
    # parent that forked it, which Linux folds in at exec).
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
