"""What .mpy files hold, counted by the MicroPython source's own tools/mpy-tool.py (the source
build32.sh builds from, under build/mp32/src): functions and bytecode bytes.

A loaded .mpy keeps the bytecode of every function (with its prelude: argument names, sizes, and
line numbers unless compiled with -O3) in the heap for as long as the function can be called.
Code that runs once at import is garbage afterwards: the module body, class bodies, and
comprehensions run by either (what they define is kept). `resident` counts only the kept code,
`loaded` all of it."""
import importlib
import os
import sys

_RUN_ONCE = ("<module>", "<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>")


def _mpy_tool(mp_dir):
    tools = os.path.join(mp_dir, "tools")
    if not os.path.isfile(os.path.join(tools, "mpy-tool.py")):
        raise FileNotFoundError(f"no tools/mpy-tool.py under {mp_dir}")
    for d in (tools, os.path.join(mp_dir, "py")):   # it imports py/makeqstrdata.py
        if d not in sys.path:
            sys.path.append(d)
    return importlib.import_module("mpy-tool")


def _class_bodies(tool, rc):
    """Indexes of rc's children that are class bodies: made right after LOAD_BUILD_CLASS."""
    op = tool.Opcode
    made = (op.MP_BC_MAKE_FUNCTION, op.MP_BC_MAKE_FUNCTION_DEFARGS, op.MP_BC_MAKE_CLOSURE,
            op.MP_BC_MAKE_CLOSURE_DEFARGS)
    bc, ip, building, found = rc.fun_data, rc.offset_opcodes, False, set()
    while ip < len(bc):
        _, size, arg, _ = tool.mp_opcode_decode(bc, ip)
        if bc[ip] == op.MP_BC_LOAD_BUILD_CLASS:
            building = True
        elif building and bc[ip] in made:
            found.add(arg)
            building = False
        ip += size
    return found


def bytecode(paths, mp_dir):
    """{"files", "functions", "bytecode_bytes", "loaded_functions", "loaded_bytecode_bytes"} over
    the .mpy files at paths; "functions" and "bytecode_bytes" are what stays once imported."""
    tool = _mpy_tool(mp_dir)
    tool.global_qstrs = tool.GlobalQStrList()   # read_mpy interns each name there
    out = dict.fromkeys(("functions", "bytecode_bytes", "loaded_functions", "loaded_bytecode_bytes"), 0)
    for path in paths:
        tool.config.native_arch = tool.MP_NATIVE_ARCH_NONE   # read_mpy takes each file's own
        todo = [(tool.read_mpy(path).raw_code, False)]
        while todo:
            rc, kept = todo.pop()
            out["loaded_functions"] += 1
            out["loaded_bytecode_bytes"] += len(rc.fun_data)
            if kept:
                out["functions"] += 1
                out["bytecode_bytes"] += len(rc.fun_data)
                todo.extend((child, True) for child in rc.children)
            else:   # run once: what it defines is kept, the class bodies and comprehensions it runs are not
                once = _class_bodies(tool, rc)
                todo.extend((child, i not in once and child.simple_name.str not in _RUN_ONCE)
                            for i, child in enumerate(rc.children))
    out["files"] = len(paths)
    return out
