"""tests/mp_runner.py on the real unix MicroPython, over a throwaway tests/core tree."""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _micropython():
    path = os.environ.get("MICROPYTHON") or os.path.join(os.path.dirname(sys.executable), "micropython")
    path = shutil.which(path) or shutil.which("micropython")
    if not path:
        pytest.skip("no micropython: set MICROPYTHON= (see README)")
    return path


def _run(tmp_path, files, *args):
    core = tmp_path / "tests" / "core"
    core.mkdir(parents=True)
    (tmp_path / "tests" / "__init__.py").write_text("")
    (core / "__init__.py").write_text("")
    shutil.copy(os.path.join(REPO, "tests", "mp_runner.py"), tmp_path / "tests")
    shutil.copy(os.path.join(REPO, "tests", "core", "check.py"), core)
    for name, text in files.items():
        (core / name).write_text(text)
    env = dict(os.environ, MICROPYPATH=".frozen:%s" % tmp_path)
    return subprocess.run([_micropython(), "tests/mp_runner.py", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_counts_passes_and_reports_each_failure_on_one_line(tmp_path):
    result = _run(tmp_path, {
        "test_a.py": "def test_ok():\n    assert 1 + 1 == 2\n\n"
                     "def test_bad():\n    assert [] == [1], 'lists differ'\n\n"
                     "def helper():\n    raise RuntimeError('not a test')\n\n"
                     "test_not_callable = 3\n",
        "test_b.py": "from tests.core.check import raises\n\n"
                     "def test_raises():\n    raises(KeyError, {}.__getitem__, 'k')\n",
        "test_c.py": "import no_such_module\n",
        "other.py": "def test_ignored():\n    assert False\n",
    })
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1
    assert "FAIL tests/core/test_a.py::test_bad: AssertionError: lists differ" in lines
    assert any(line.startswith("ERROR tests/core/test_c.py: ImportError") for line in lines)
    assert lines[-1] == "2 passed, 2 failed"
    assert len(lines) == 3


def test_all_passing_exits_zero(tmp_path):
    result = _run(tmp_path, {"test_a.py": "def test_one():\n    pass\n\ndef test_two():\n    pass\n"})
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().splitlines() == ["2 passed, 0 failed"]


def test_no_tests_is_a_failure(tmp_path):
    result = _run(tmp_path, {"test_a.py": "X = 1\n"})
    assert result.returncode == 1
    assert result.stdout.strip().splitlines() == ["0 passed, 0 failed"]


def test_names_select_files_and_v_prints_tracebacks(tmp_path):
    result = _run(tmp_path, {"test_a.py": "def test_a():\n    assert False\n",
                             "test_b.py": "def test_b():\n    pass\n"}, "-v", "test_a")
    assert result.returncode == 1
    assert "Traceback" in result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 passed, 1 failed"


def test_what_a_test_prints_shows_only_under_its_failure(tmp_path):
    result = _run(tmp_path, {"test_a.py": "def test_quiet():\n    print('link: connect failed: 111')\n\n"
                                          "def test_loud():\n    print('a clue')\n    assert False\n"})
    assert result.returncode == 1
    assert result.stdout.strip().splitlines() == [
        "FAIL tests/core/test_a.py::test_loud: AssertionError", "    | a clue", "1 passed, 1 failed"]
