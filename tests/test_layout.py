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
# Every module of the package, subpackages too, dotted below ga ("cli", "monitor.loop", ...).
ALL_MODULES = sorted(os.path.relpath(os.path.join(d, f), PACKAGE)[:-3].replace(os.sep, ".")
                     for d, _, files in os.walk(PACKAGE) for f in files if f.endswith(".py"))
# Modules that must import without TensorFlow (the split, the generators, the CLI's start).
LIGHT = ["__main__", "cli", "config", "errors", "figures", "files", "images", "layouts", "log", "predict", "report", "runs",
         "scan", "splitting", "synthetic", "tasks"]


def _tree(name):
    with open(os.path.join(PACKAGE, *name.split(".")) + ".py", encoding="utf-8") as fh:
        return ast.parse(fh.read())


def _script_blocks(tree):
    """The `if __name__ == "__main__":` blocks of a module: they run only when the module is
    executed as a script (then it is `__main__`, another module object), so what they import
    is no cycle."""
    return [n for n in tree.body if isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
            and isinstance(n.test.left, ast.Name) and n.test.left.id == "__name__"]


def _imports(name, scripts=False):
    """(module imported, names imported) for every `ga` import in a module, at any depth,
    outside its script block (in it too with `scripts`)."""
    out = []
    tree = _tree(name)
    skip = set() if scripts else {id(n) for block in _script_blocks(tree) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and (node.module == "ga" or node.module.startswith("ga.")):
            mod = node.module[3:] if node.module != "ga" else ""
            for alias in node.names:
                target = alias.name if not mod and alias.name in MODULES else mod
                out.append((target, alias.name))
        elif isinstance(node, ast.Import):
            out += [(a.name[3:], None) for a in node.names if a.name.startswith("ga.")]
    return out


def test_no_library_module_imports_the_command_line():
    """ga.cli is the top: only the `python -m ga` entry imports it (script blocks included;
    `python -m ga.synthetic` and the like hand over to `python -m ga` in a new process)."""
    front = [m for m in ALL_MODULES if m == "cli" or m.startswith("cli.")]
    assert front, "no ga.cli"
    bad = [(m, t) for m in ALL_MODULES if m not in front and m != "__main__"
           for t, _ in _imports(m, scripts=True) if t == "cli" or t.startswith("cli.")]
    assert not bad, bad


def test_no_import_cycle():
    """Script blocks included: `python -m ga.x` must not close a loop either."""
    graph = {m: {t for t, _ in _imports(m, scripts=True) if t in MODULES and t != m} for m in MODULES}
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


_COMMANDS_WITHOUT_TF = """
import os, sys
from ga.cli import main
run = sys.argv[1]
steps = [
    ["synth", "crystals", "--out", "crops", "--per-class", "6"],
    ["split", "--source", "crops", "--dest", "split", "--no-progress"],
    ["synth", "process", "--out", "process", "--frames", "3"],
    ["runs", os.path.dirname(run)],
    ["report", run],
    ["monitor", "--show-detection", "FIRST_FRAME", "--out-dir", "shown"],
]
for argv in steps:
    if "FIRST_FRAME" in argv:
        argv[argv.index("FIRST_FRAME")] = os.path.join("process", sorted(f for f in os.listdir("process") if f.endswith(".png"))[0])
    code = main(argv)
    print("STEP", argv[0], code, "tensorflow" in sys.modules, "keras" in sys.modules)
"""


def test_commands_that_need_no_tensorflow_do_not_import_it(tmp_path, trained_run):
    """split, synth, runs, report and monitor --show-detection run in one fresh interpreter
    without importing TensorFlow or Keras (the import costs 5-8 s on the slower CPUs). Checked
    in sys.modules: `python -X importtime` misses it, as its report goes to the stderr that
    ga silences while TensorFlow loads (GA_TF_NOTES=1 shows both). A command with a model
    loads TensorFlow even for an ONNX model: crops are resized with TensorFlow's antialiased
    resize, exactly as in training."""
    out = subprocess.run([sys.executable, "-c", _COMMANDS_WITHOUT_TF, trained_run], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("STEP ")]
    assert [line[0] for line in lines] == ["synth", "split", "synth", "runs", "report", "monitor"]
    assert all(line[1:] == ["0", "False", "False"] for line in lines), out.stdout


TASK_NAMES = {"binary", "multiclass", "multilabel", "contrastive"}


def _names_a_task(node):
    if isinstance(node, ast.Constant) and node.value in TASK_NAMES:
        return True
    return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(_names_a_task(e) for e in node.elts)


def test_task_differences_live_in_tasks_py():
    """Comparing a task by name outside ga/tasks.py (and config.py's field) is at most 3, each
    with a comment saying why it cannot be a task method."""
    found = []
    for m in MODULES:
        if m in ("tasks", "config"):
            continue
        lines = open(os.path.join(PACKAGE, f"{m}.py"), encoding="utf-8").read().splitlines()
        for node in ast.walk(_tree(m)):
            if isinstance(node, ast.Compare) and any(_names_a_task(n) for n in [node.left, *node.comparators]):
                found.append((m, node.lineno, lines[node.lineno - 1].strip()))
    assert len(found) <= 3, found
    for m, line, text in found:
        assert "#" in text, f"{m}.py:{line} compares a task by name without saying why: {text}"


def test_no_print_in_library_modules():
    """Only the command line prints; library functions return what they found."""
    printing = sorted({m for m in MODULES + ["__init__"] for node in ast.walk(_tree(m))
                       if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"})
    assert printing == ["cli"]


def test_only_layouts_reads_a_label_file():
    """labels.csv, the graphene study's <stem>-labels.csv and class folders are read in
    ga/layouts.py alone; other modules name the file only to write it or in messages."""
    readers = {"read_labels_csv", "_label_file", "read_graphene_layout", "class_folders", "find_classes"}
    defined = sorted((m, n.name) for m in MODULES for n in ast.walk(_tree(m))
                     if isinstance(n, ast.FunctionDef) and n.name in readers and m != "layouts")
    assert defined == []
    literal = sorted({m for m in MODULES for n in ast.walk(_tree(m)) if m != "layouts"
                      and isinstance(n, ast.Constant) and isinstance(n.value, str)
                      and n.value.endswith(("labels.csv", "-labels.csv")) and " " not in n.value})
    assert literal == []


def _public_functions(tree):
    """Module-level public functions and the public methods of public module-level classes."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for m in node.body:
                if isinstance(m, ast.FunctionDef) and not m.name.startswith("_"):
                    yield f"{node.name}.{m.name}", m


def test_every_public_function_is_typed():
    untyped = []
    for m in MODULES + ["__init__"]:
        for name, fn in _public_functions(_tree(m)):
            args = [a for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs if a.arg not in ("self", "cls")]
            args += [a for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
            if fn.returns is None or any(a.annotation is None for a in args):
                untyped.append(f"{m}.{name}")
    assert untyped == []
    assert os.path.isfile(os.path.join(PACKAGE, "py.typed"))


def test_the_command_line_loads_a_model_in_one_place():
    front = [m for m in ALL_MODULES if m == "cli" or m.startswith("cli.")]
    calls = [m for m in front for node in ast.walk(_tree(m)) if isinstance(node, ast.Call)
             and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_model"]
    assert len(calls) == 1, calls
