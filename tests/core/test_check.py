"""The shared helper works, and this file runs under both pytest and tests/mp_runner.py."""
from tests.core.check import raises


def _divide(a, b):
    return a // b


def test_raises_returns_the_exception():
    exc = raises(ZeroDivisionError, _divide, 1, b=0)
    assert isinstance(exc, ZeroDivisionError)


def test_raises_fails_when_nothing_is_raised():
    exc = raises(AssertionError, raises, ValueError, _divide, 4, 2)
    assert "ValueError" in str(exc)


def test_raises_lets_other_exceptions_through():
    exc = raises(ZeroDivisionError, raises, KeyError, _divide, 1, 0)
    assert isinstance(exc, ZeroDivisionError)
