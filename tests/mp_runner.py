"""Run tests/core/test_*.py on MicroPython (make test does this with the unix port).

    MICROPYPATH=.frozen:$PWD/.mplib:$PWD micropython tests/mp_runner.py [-v] [NAME ...]

Imports each tests/core/test_*.py (only those whose file name contains a NAME, if given),
calls every top-level callable named test_* in sorted order, prints one line per failure
and ends with `N passed, N failed`. -v also prints each failure's traceback. What a test
prints (a link reporting an expected failure, say) is held back and shown only under its
FAIL line, as pytest does. Exit status 1 on any failure or when no test ran. Plain Python:
it runs on CPython too.
"""
import builtins
import gc
import os
import sys

_print = builtins.print


def _here():
    path = __file__
    cut = path.rfind("/")
    return path[:cut] if cut >= 0 else "."


def _describe(exc):
    text = str(exc)
    return type(exc).__name__ + (": " + text if text else "")


def _traceback(exc):
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc)  # MicroPython
    else:
        import traceback
        traceback.print_exception(exc)


def _load(name):
    __import__(name)
    return sys.modules[name]


def main(args):
    verbose = "-v" in args
    wanted = [a for a in args if a != "-v"]
    core = _here() + "/core"
    files = sorted(f for f in os.listdir(core) if f.startswith("test_") and f.endswith(".py"))
    if wanted:
        files = [f for f in files if any(w in f for w in wanted)]
    passed = failed = 0
    for filename in files:
        shown = "tests/core/" + filename
        try:
            module = _load("tests.core." + filename[:-3])
        except Exception as exc:
            failed += 1
            print("ERROR %s: %s" % (shown, _describe(exc)))
            if verbose:
                _traceback(exc)
            continue
        for name in sorted(dir(module)):
            test = getattr(module, name)
            if not name.startswith("test_") or not callable(test):
                continue
            said = []
            builtins.print = lambda *a, **kw: said.append(" ".join(str(x) for x in a))
            try:
                test()
            except Exception as exc:
                builtins.print = _print
                failed += 1
                print("FAIL %s::%s: %s" % (shown, name, _describe(exc)))
                for line in said:
                    print("    | " + line)
                if verbose:
                    _traceback(exc)
            else:
                passed += 1
            finally:
                builtins.print = _print
        gc.collect()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
