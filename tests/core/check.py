"""Helpers for tests/core/, which run under pytest and under MicroPython (no pytest import)."""


def raises(exc_type, fn, *args, **kw):
    """Call fn(*args, **kw) and return the exc_type it raises; fail if it raises nothing."""
    try:
        fn(*args, **kw)
    except exc_type as exc:
        return exc
    raise AssertionError("expected %s from %s" % (exc_type.__name__, getattr(fn, "__name__", fn)))
