# Code on the device costs flash and RAM: every function the runtime and HAL files define is
# called somewhere, and every attribute they set is read somewhere. Plain text scanning, so
# it runs under pytest and under unix MicroPython (tests/mp_runner.py).

_CHECKED = ("firmware/runtime/link.py", "firmware/runtime/storage.py",
            "firmware/runtime/device.py", "firmware/hal/base.py", "firmware/hal/unix.py",
            "firmware/hal/esp32.py", "firmware/iothub/mqtt.py", "firmware/runtime/ota.py",
            "ota_boot.py")
# where a use may be: the firmware, the entry points, and umqtt.simple (link.py's base class)
_USERS = ("firmware/runtime", "firmware/hal", "firmware/app", "firmware/iothub")
_MORE = ("main.py", "boot.py", "ota_boot.py", ".mplib/umqtt/simple.py")


def _root():
    p = __file__
    for _ in range(3):
        p = p[:p.rfind("/")] if "/" in p else "."
    return p


def _read(path):
    try:
        with open(_root() + "/" + path) as f:
            return f.read()
    except OSError:
        return ""


def _corpus():
    import os
    text = []
    for d in _USERS:
        for name in os.listdir(_root() + "/" + d):
            if name.endswith(".py"):
                text.append(_read(d + "/" + name))
    for p in _MORE:
        text.append(_read(p))
    return "\n".join(text)


def _ident(c):
    return c.isalpha() or c.isdigit() or c == "_"


def _uses(text, name):
    # (occurrences that are not its `def`, those that are not an assignment `name =`), as
    # whole identifiers
    n = reads = i = 0
    while True:
        i = text.find(name, i)
        if i < 0:
            return n, reads
        j = i + len(name)
        if (i == 0 or not _ident(text[i - 1])) and (j == len(text) or not _ident(text[j])):
            n += text[max(0, i - 4):i] != "def "
            rest = text[j:j + 3].lstrip(" ")
            if not (rest.startswith("=") and not rest.startswith("==")):
                reads += 1
        i = j


def _defined(src):
    # (function and method names, attribute names set on self)
    funcs, attrs = [], []
    for line in src.split("\n"):
        s = line.strip()
        if s.startswith("def ") and "(" in s:
            name = s[4:s.index("(")]
            if not name.startswith("__"):
                funcs.append(name)
        i = 0
        while True:
            i = line.find("self.", i)
            if i < 0:
                break
            j = i + 5
            while j < len(line) and _ident(line[j]):
                j += 1
            if line[j:j + 3].lstrip(" ").startswith("=") and not line[j:].lstrip(" ").startswith("=="):
                attrs.append(line[i + 5:j])
            i = j
    return funcs, attrs


def test_every_function_is_called_and_every_attribute_read():
    corpus = _corpus()
    unused = []
    for path in _CHECKED:
        funcs, attrs = _defined(_read(path))
        assert funcs, path
        for name in funcs:
            if _uses(corpus, name)[0] == 0:         # defined (maybe twice), never called
                unused.append(path + ": def " + name)
        for name in attrs:
            if _uses(corpus, name)[1] == 0:         # only ever assigned
                unused.append(path + ": self." + name)
    assert not unused, unused
