"""The package's shape: no import cycle, no private name used across modules, short
functions, and the split and the generators starting without TensorFlow."""

import ast
import os
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "ga")
# Every module of the package, subpackages too, dotted below ga ("cli", "cli.monitor", ...;
# a subpackage is its __init__.py); the top-level __init__ is "__init__", outside the list.
MODULES = sorted(
    (os.path.relpath(d, PACKAGE).replace(os.sep, ".") if f == "__init__.py"
     else os.path.relpath(os.path.join(d, f), PACKAGE)[:-3].replace(os.sep, ".").removeprefix("./").lstrip("."))
    for d, _, files in os.walk(PACKAGE) for f in files if f.endswith(".py") and (f != "__init__.py" or d != PACKAGE))
ALL_MODULES = MODULES + ["__init__"]
FRONT = [m for m in MODULES if m == "cli" or m.startswith("cli.")]
# Modules that must import without TensorFlow (the split, the generators, the CLI's start).
LIGHT = ["__main__", "cli", "cli.monitor", "cli.infer", "config", "errors", "figures", "files", "images", "layouts",
         "loading", "inputs", "log", "predict", "report", "runs", "scan", "splitting", "synthetic", "task_text", "tasks"]


def _path(name):
    base = os.path.join(PACKAGE, *name.split("."))
    return os.path.join(base, "__init__.py") if os.path.isdir(base) else base + ".py"


def _tree(name):
    with open(_path(name), encoding="utf-8") as fh:
        return ast.parse(fh.read())


def _script_blocks(tree):
    """The `if __name__ == "__main__":` blocks of a module: they run only when the module is
    executed as a script (then it is `__main__`, another module object), so what they import
    is no cycle."""
    return [n for n in tree.body if isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
            and isinstance(n.test.left, ast.Name) and n.test.left.id == "__name__"]


def _imports(name, scripts=False):
    """(module imported, name imported) for every `ga` import in a module, at any depth,
    outside its script block (in it too with `scripts`); `from ga.cli import _options`
    imports the module cli._options (name None)."""
    out = []
    tree = _tree(name)
    skip = set() if scripts else {id(n) for block in _script_blocks(tree) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and (node.module == "ga" or node.module.startswith("ga.")):
            mod = node.module[3:] if node.module != "ga" else ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}" if mod else alias.name
                out.append((sub, None) if sub in MODULES else (mod, alias.name))
        elif isinstance(node, ast.Import):
            out += [(a.name[3:], None) for a in node.names if a.name.startswith("ga.")]
    return out


def test_no_library_module_imports_the_command_line():
    """ga.cli is the top: only the `python -m ga` entry imports it (script blocks included;
    `python -m ga.synthetic` and the like hand over to `python -m ga` in a new process)."""
    assert FRONT, "no ga.cli"
    bad = [(m, t) for m in ALL_MODULES if m not in FRONT and m != "__main__"
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
    """Private names stay in their module; a private module (cli._options) is imported only
    inside its own package."""
    used = [(m, t, n) for m in MODULES for t, n in _imports(m)
            if n and n.startswith("_") and not n.startswith("__")]
    private = [(m, t) for m in MODULES for t, n in _imports(m) if n is None and t.rsplit(".", 1)[-1].startswith("_")
               and t.rsplit(".", 1)[-1] != "__init__" and not m.startswith(t.rsplit(".", 1)[0] + ".")]
    assert used == [] and private == []


def test_no_function_over_60_lines():
    long = [(m, n.name, n.end_lineno - n.lineno + 1) for m in ALL_MODULES
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
        lines = open(_path(m), encoding="utf-8").read().splitlines()
        for node in ast.walk(_tree(m)):
            if isinstance(node, ast.Compare) and any(_names_a_task(n) for n in [node.left, *node.comparators]):
                found.append((m, node.lineno, lines[node.lineno - 1].strip()))
    assert len(found) <= 3, found
    for m, line, text in found:
        assert "#" in text, f"{m}.py:{line} compares a task by name without saying why: {text}"


def test_no_print_in_library_modules():
    """Only the command line prints; library functions return what they found."""
    printing = sorted({m for m in ALL_MODULES for node in ast.walk(_tree(m))
                       if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"})
    assert printing and set(printing) <= set(FRONT), printing


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
    for m in ALL_MODULES:
        for name, fn in _public_functions(_tree(m)):
            args = [a for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs if a.arg not in ("self", "cls")]
            args += [a for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
            if fn.returns is None or any(a.annotation is None for a in args):
                untyped.append(f"{m}.{name}")
    assert untyped == []
    assert os.path.isfile(os.path.join(PACKAGE, "py.typed"))


def test_the_command_line_loads_a_model_in_one_place():
    """The commands load models through ModelCommand.load alone, which calls ga.api.load,
    the front end's one caller of ga.loading.load_model."""
    def calls(modules, names):
        return [m for m in modules for node in ast.walk(_tree(m)) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) in names]

    assert calls(FRONT, ("load", "load_model")) == ["cli._base"]
    assert calls(["api"], ("load_model",)) == ["api"]


def test_files_stay_short():
    """No file of the package over 800 lines; each command module of ga.cli under 200."""
    lines = {m: sum(1 for _ in open(_path(m), encoding="utf-8")) for m in ALL_MODULES}
    assert {m: n for m, n in lines.items() if n > 800} == {}
    commands = [m for m in FRONT if m != "cli" and not m.rsplit(".", 1)[-1].startswith("_")]
    assert len(commands) >= 12 and {m: lines[m] for m in commands if lines[m] >= 200} == {}


# Options of one name that mean different things in different commands.
_SAME_NAME_OTHER_OPTION = {
    "--out-dir": "review and monitor write to their own folders by default (review, monitor_out)",
    "--cluster": "monitor --save-crops --cluster K groups saved crops; infer's K is optional",
    "--threshold": "ga import's is the threshold written into the imported run's labels.json",
    "--unsafe": "main.py accepts and ignores it (scripts written against earlier versions)",
    "--out": "what ga synth writes, the run folder ga import creates",
    "--seed": "the split's shuffle, a generator's drawing",
}


def test_no_option_declared_twice():
    """A flag is declared once in the command line (ga.cli._options for shared ones); the
    synthetic data kinds are sub-commands of their own."""
    seen = {}
    for m in FRONT:
        for node in ast.walk(_tree(m)):
            flags = []
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                flags = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
            elif isinstance(node, ast.Tuple) and m == "cli._options":
                flags = [e.value for e in node.elts if isinstance(e, ast.Constant) and str(e.value).startswith("--")]
            for flag in flags:
                seen.setdefault(flag, set()).add(m)
    twice = {f: sorted(ms) for f, ms in seen.items() if len(ms) > 1 and f not in _SAME_NAME_OTHER_OPTION}
    assert "--batch-size" in seen and twice == {}
