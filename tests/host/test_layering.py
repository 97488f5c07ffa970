"""The pure layers stay pure: no I/O, clock or hardware imports in firmware/iothub and firmware/app."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORBIDDEN = {"socket", "usocket", "machine", "network", "time", "utime", "select", "ssl", "ussl",
             "os", "uos", "random", "urandom"}


@pytest.mark.parametrize("layer", ["firmware/iothub", "firmware/app"])
def test_pure_layers_import_no_io(layer):
    files = sorted((ROOT / layer).glob("**/*.py"))
    assert files, f"no sources under {layer}"
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.relative_to(ROOT)} imports {name}"
