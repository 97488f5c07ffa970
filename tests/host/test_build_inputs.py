"""build32.sh decides whether to build a 32-bit bench binary by the content of what goes into it
(host_tools/bench/build_inputs.py), never by file times: a frozen file changed with its old
modification time kept is frozen again, an unchanged tree builds nothing. The decision is
tested on its own (no MicroPython is compiled here)."""
import collections
import glob
import json
import os

import pytest

from host_tools.bench import build_inputs
from host_tools.processes import REPO

Output = collections.namedtuple("Output", "full_path target_path kind opt")
SETTINGS = {"VARIANT": "standard", "MICROPY_FORCE_32BIT": "1", "micropython": "1.26.1+ds-1",
            "cc": "cc: gcc 12"}


def _tree(tmp_path):
    """A small frozen tree: a manifest and two modules of a package."""
    (tmp_path / "pkg").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    return 1\n")
    (tmp_path / "pkg" / "b.py").write_text("X = 2\n")
    (tmp_path / "manifest.py").write_text('package("pkg")\n')
    return tmp_path


def _want(root, settings=SETTINGS):
    outputs = [Output(str(root / "pkg" / n), "pkg/" + n, 1, None)
               for n in sorted(os.listdir(root / "pkg"))]
    frozen = build_inputs.frozen_entries(outputs, [str(root / "manifest.py")], (("", str(root)),))
    return build_inputs.record(settings, frozen, "abc1234")


def _built(root):
    """What build32.sh leaves after a build: the record in the object folder and by the binary."""
    w = _want(root)
    return w, dict(w)


def test_an_unchanged_tree_builds_nothing(tmp_path):
    root = _tree(tmp_path)
    objects, binary = _built(root)
    assert build_inputs.decide(_want(root), objects, binary, True) == ("current", "built from these inputs")


def test_a_frozen_file_changed_with_its_old_mtime_kept_is_frozen_again(tmp_path):
    root = _tree(tmp_path)
    objects, binary = _built(root)
    a = root / "pkg" / "a.py"
    st = os.stat(a)
    a.write_text("def f():\n    return 7\n")            # same size, other content
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))   # as a checkout that restores times does
    assert os.stat(a).st_mtime_ns == st.st_mtime_ns and os.stat(a).st_size == st.st_size
    action, why = build_inputs.decide(_want(root), objects, binary, True)
    assert action == "refreeze" and "frozen files" in why


def test_a_frozen_file_removed_or_added_is_frozen_again(tmp_path):
    root = _tree(tmp_path)
    objects, binary = _built(root)
    (root / "pkg" / "b.py").rename(root / "pkg" / "c.py")   # same content, another path
    assert build_inputs.decide(_want(root), objects, binary, True)[0] == "refreeze"
    (root / "pkg" / "c.py").unlink()
    assert build_inputs.decide(_want(root), objects, binary, True)[0] == "refreeze"


def test_a_changed_manifest_is_frozen_again(tmp_path):
    root = _tree(tmp_path)
    objects, binary = _built(root)
    (root / "manifest.py").write_text('package("pkg", opt=3)\n')
    assert build_inputs.decide(_want(root), objects, binary, True)[0] == "refreeze"


def test_the_same_content_in_another_checkout_is_the_same_build(tmp_path):
    one, other = _tree(tmp_path / "one"), _tree(tmp_path / "other")
    objects, binary = _built(one)
    assert build_inputs.decide(_want(other), objects, binary, True)[0] == "current"


@pytest.mark.parametrize("change", [{"micropython": "1.27.0+ds-1"}, {"MICROPY_FORCE_32BIT": "0"},
                                    {"VARIANT": "minimal"}, {"cc": "cc: gcc 14"}])
def test_other_sources_flags_or_compiler_build_the_objects_again(tmp_path, change):
    root = _tree(tmp_path)
    objects, binary = _built(root)
    action, why = build_inputs.decide(_want(root, dict(SETTINGS, **change)), objects, binary, True)
    assert action == "rebuild" and "flags" in why


def test_no_record_or_no_binary_means_a_build(tmp_path):
    root = _tree(tmp_path)
    objects, binary = _built(root)
    assert build_inputs.decide(_want(root), None, binary, True)[0] == "rebuild"   # a copied cache
    assert build_inputs.decide(_want(root), objects, None, True)[0] == "refreeze"
    assert build_inputs.decide(_want(root), objects, binary, False)[0] == "refreeze"


def test_the_command_line_decides_from_the_records_on_disk(tmp_path):
    root = _tree(tmp_path)
    want, binary = tmp_path / "want.json", tmp_path / "micropython"
    want.write_text(json.dumps(_want(root)))
    (tmp_path / "unix").mkdir()
    (tmp_path / "unix" / "inputs.json").write_text(want.read_text())
    binary.write_text("")
    (tmp_path / "micropython.json").write_text(want.read_text())
    args = ["decide", str(want), str(tmp_path / "unix" / "inputs.json"), str(tmp_path / "micropython.json"),
            str(binary)]
    assert _cli(args) == "current"
    (root / "pkg" / "a.py").write_text("changed = 1\n")
    want.write_text(json.dumps(_want(root)))
    assert _cli(args) == "refreeze: the frozen files or manifests changed"


def _cli(args):
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        build_inputs.main(args)
    return out.getvalue().strip()


def _micropython_source():
    found = sorted(glob.glob(os.path.join(REPO, "build", "mp32", "src", "micropython-*", "tools", "manifestfile.py")))
    if not found:
        pytest.skip("no MicroPython source under build/mp32/src (make mp32 unpacks it)")
    return os.path.dirname(os.path.dirname(found[-1]))


def test_the_bench_builds_inputs_are_what_their_manifests_freeze():
    mp = _micropython_source()
    frozen = build_inputs.want(mp, os.path.join(REPO, "boards", "unix32", "manifest.py"), REPO, SETTINGS)
    targets = {f["target"] for f in frozen["frozen_inputs"]["files"]}
    sources = {os.path.relpath(os.path.join(d, f), REPO) for d, _, fs in os.walk(os.path.join(REPO, "firmware"))
               for f in fs if f.endswith(".py") and f != "manifest.py"}
    assert sources <= targets and {"ssl.py", "ota_boot.py", "umqtt/simple.py"} <= targets
    assert frozen["manifests"] == ["boards/unix32/manifest.py", "firmware/manifest.py"]
    stock = build_inputs.want(mp, os.path.join(REPO, "boards", "unix32", "stock.py"), REPO, SETTINGS)
    assert not any(f["target"].startswith("firmware/") for f in stock["frozen_inputs"]["files"])
    assert stock["objects"] == frozen["objects"] and stock["digest"] != frozen["digest"]
