# firmware/hal/base.BaseHal._watch: the one place both HALs (unix, ESP32) keep the link's
# socket in their poll set. Runs under pytest and under unix MicroPython (tests/mp_runner.py).
import sys


def _base():
    # firmware/hal/__init__.py picks the port's HAL, and the unix one needs framebuf, which
    # CPython lacks: there, load base.py (pure Python) on its own.
    if sys.implementation.name == "micropython":
        from firmware.hal import base
        return base
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "firmware", "hal", "base.py")
    spec = importlib.util.spec_from_file_location("_hal_base", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BaseHal = _base().BaseHal


class _Poll:
    # records what the HAL asks of select.poll(), keeping what else is registered
    def __init__(self):
        self.objs = ["stdin"]

    def register(self, obj, mask):
        assert obj not in self.objs, "registered twice"
        self.objs.append(obj)

    def unregister(self, obj):
        if obj == "closed":
            raise OSError(9)
        self.objs.remove(obj)


def _hal():
    h = BaseHal()
    h._poll = _Poll()
    return h


def test_watch_keeps_one_socket_besides_what_the_port_registered():
    h = _hal()
    h._watch(None)
    assert h._poll.objs == ["stdin"]
    h._watch("sock1")
    h._watch("sock1")                  # every loop turn: no second registration
    assert h._poll.objs == ["stdin", "sock1"]
    h._watch("sock2")                  # a reconnect's new socket replaces the old one
    assert h._poll.objs == ["stdin", "sock2"]
    h._watch(None)                     # offline: nothing but what the port registered
    assert h._poll.objs == ["stdin"] and h._wake is None


def test_watch_survives_a_socket_that_is_already_closed():
    h = _hal()
    h._poll.objs.append("closed")
    h._wake = "closed"
    h._watch("sock")
    assert h._wake == "sock" and "sock" in h._poll.objs
