"""Nothing ships on the device that nothing on the device uses.

Every function, method, class and module-level constant defined under firmware/, and every
attribute the firmware sets on an object, must be referenced from device code: firmware/, boot.py,
main.py, or the micropython-lib modules the firmware builds on (a method that overrides one of
theirs is called from there). References are read from the syntax tree, so a name in a comment or
a string does not count, and a use in tests or host_tools does not count either: host-only code
belongs in host_tools. A function's references to itself (recursion) do not count.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEVICE_CODE = sorted((ROOT / "firmware").rglob("*.py")) + [ROOT / n for n in ("boot.py", "main.py", "ota_boot.py")]
# micropython-lib code the firmware runs on: uses only, never checked.
LIBRARIES = [ROOT / ".mplib" / "umqtt" / "simple.py", ROOT / ".mplib" / "urequests" / "__init__.py"]
MANIFESTS = ("manifest.py",)   # freezing recipes run by mpy tooling, not on the device


def _module_name(path):
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else pathlib.Path(path.name)
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _definitions(tree):
    """(name, kind, node) for what a module defines that the device carries. kind "def" and
    "constant" are module level (resolved through imports); methods and attributes by name."""
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.append((node.name, "def", node))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.extend((t.id, "constant", node) for t in targets if isinstance(t, ast.Name))
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
        for node in cls.body:
            if isinstance(node, ast.FunctionDef):
                out.append((node.name, "method", node))
            elif isinstance(node, ast.Assign):
                out.extend((t.id, "class attribute", node) for t in node.targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and isinstance(node.value, ast.Name) and node.value.id == "self":
            out.append((node.attr, "attribute", node))
    return [(n, k, node) for n, k, node in out if not (n.startswith("__") and n.endswith("__"))]


def _references(tree, module):
    """Every load in a module, as (key, the function node it sits in or None). Keys:
    ("global", module, name) for a module-level name, resolved through `import`/`from ... import`
    (so `settings.check` and `sas.check` are different things); ("member", name) for any
    attribute (methods and attributes are matched by name: the receiver's type is not known);
    ("escapes", module) where a module itself is passed on as a value (`Hal(gestures)`): its
    functions are then reached as attributes of something else, matched by name."""
    aliases = {}                    # local name -> ("module", dotted) | ("global", module, name)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = ("from", node.module, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = ("module", a.name)
    out = []

    def resolve(name):
        a = aliases.get(name)
        if a is None:
            return ("global", module, name)
        if a[0] == "from":          # a name from a module, or a submodule of a package
            return ("global", a[1], a[2])
        return None

    def visit(node, owner):
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) else owner
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
                key = resolve(child.id)
                if key:
                    out.append((key, owner))
                    out.append((("escapes", key[1] + "." + key[2]), owner))
                out.append((("member", child.id), owner))
            elif isinstance(child, ast.Attribute) and isinstance(child.ctx, ast.Load):
                out.append((("member", child.attr), owner))
                if isinstance(child.value, ast.Name):
                    a = aliases.get(child.value.id)
                    if a and a[0] == "from":            # from pkg import module; module.name
                        out.append((("global", a[1] + "." + a[2], child.attr), owner))
                    elif a and a[0] == "module":
                        out.append((("global", a[1], child.attr), owner))
            elif isinstance(child, ast.ImportFrom) and child.module:
                for a in child.names:   # re-exports (firmware/hal/__init__.py) count as uses
                    out.append((("global", child.module, a.name), owner))
            if isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name):
                # `name.attr`: the name is used, but a module named so is not passed on
                key = resolve(child.value.id)
                if key:
                    out.append((key, owner))
                out.append((("member", child.value.id), owner))
                continue
            visit(child, inner)
    visit(tree, None)
    return out


def _unused(device_code=DEVICE_CODE):
    trees = {p: ast.parse(p.read_text(), str(p)) for p in device_code if p.exists()}
    refs = {}
    sources = [(tree, _module_name(p)) for p, tree in trees.items()]
    sources += [(ast.parse(p.read_text()), p.stem) for p in LIBRARIES if p.exists()]
    for tree, module in sources:
        for key, owner in _references(tree, module):
            refs.setdefault(key, []).append(owner)
    unused = []
    for path, tree in trees.items():
        if path.name in MANIFESTS:
            continue
        module = _module_name(path)
        for name, kind, node in _definitions(tree):
            keys = [("global", module, name)] if kind in ("def", "constant") else [("member", name)]
            if kind == "def" and ("escapes", module) in refs:
                keys.append(("member", name))
            if not [o for k in keys for o in refs.get(k, ()) if o is not node]:
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                unused.append(f"{where}:{node.lineno}: {kind} {name}")
    return unused


def test_every_definition_on_the_device_is_used_on_the_device():
    if not LIBRARIES[0].exists():
        pytest.skip("run make setup first: .mplib/ holds umqtt.simple, which the link builds on")
    assert _unused() == []


def test_the_check_finds_a_planted_unused_function_and_ignores_comments(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("# planted_helper() is mentioned here only\n"
                       "def planted_helper():\n    return planted_helper()\n"
                       "_PLANTED_LIMIT = 3\n"
                       "class Planted:\n    def __init__(self):\n        self.never_read = 1\n"
                       "x = Planted\n")
    found = "\n".join(_unused(DEVICE_CODE + [planted]))
    assert "def planted_helper" in found          # its only use is itself
    assert "constant _PLANTED_LIMIT" in found
    assert "attribute never_read" in found
    assert "def Planted" not in found               # referenced by `x = Planted`
