"""The package's shape: no import cycle, no private name used across modules, short
functions, and the split and the generators starting without TensorFlow."""

import ast
import os
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "ga")
MODULES = sorted(f[:-3] for f in os.listdir(PACKAGE) if f.endswith(".py") and f != "__init__.py")
# Modules that must import without TensorFlow (the split, the generators, the CLI's start).
LIGHT = ["__main__", "cli", "config", "errors", "figures", "files", "images", "log", "predict", "report", "runs",
         "scan", "splitting", "synthetic"]


def _tree(name):
    with open(os.path.join(PACKAGE, f"{name}.py"), encoding="utf-8") as fh:
        return ast.parse(fh.read())


def _imports(name):
    """(module imported, names imported) for every `ga` import in a module, at any depth."""
    out = []
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ImportFrom) and node.module and (node.module == "ga" or node.module.startswith("ga.")):
            mod = node.module[3:] if node.module != "ga" else ""
            for alias in node.names:
                target = alias.name if not mod and alias.name in MODULES else mod
                out.append((target, alias.name))
        elif isinstance(node, ast.Import):
            out += [(a.name[3:], None) for a in node.names if a.name.startswith("ga.")]
    return out


def test_no_import_cycle():
    graph = {m: {t for t, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        state[m] = "open"
        for t in sorted(graph[m]):
            visit(t, path + [m])
        state[m] = "done"

    for m in MODULES:
        visit(m, [])


def test_no_private_name_imported_from_another_module():
    used = [(m, t, n) for m in MODULES for t, n in _imports(m)
            if n and n.startswith("_") and not n.startswith("__")]
    assert used == []


def test_no_function_over_60_lines():
    long = [(m, n.name, n.end_lineno - n.lineno + 1) for m in MODULES + ["__init__"]
            for n in ast.walk(_tree(m)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > 60]
    assert long == []


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_import_alone_without_tensorflow(module):
    code = f"import sys, ga.{module}; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def test_every_module_imports_in_a_fresh_interpreter():
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module('ga.' + m)\nprint('ok')"
    out = subprocess.run([sys.executable, "-c", code, *MODULES], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("argv", [["split_data.py", "--help"], ["-m", "ga.synthetic", "--help"]])
def test_split_and_generators_start_without_tensorflow(argv):
    script = os.path.join(ROOT, argv[0]) if argv[0].endswith(".py") else None
    target = f"runpy.run_path({script!r}, run_name='__main__')" if script else \
        f"runpy.run_module({argv[1]!r}, run_name='__main__', alter_sys=True)"
    code = ("import runpy, sys\nsys.argv = ['x', '--help']\ntry:\n    " + target + "\nexcept SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\nprint('TF', 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout and out.stdout.strip().endswith("TF False")
