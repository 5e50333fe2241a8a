"""What several test files need: running a script or module as a user does (in a fresh
interpreter, or in this one through the same entry function), reading a CSV, checking a
one-line error."""

import contextlib
import csv
import functools
import io
import os
import runpy
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*argv, cwd=ROOT, expect=0, env=None, timeout=600):
    """Run `python <argv>` in a fresh interpreter: a repository script (`main.py`,
    `bench/x.py`: found in the repository), `-m module ...`, or `-c code`; assert its exit
    status (unless `expect` is None) and return the CompletedProcess."""
    argv = [str(a) for a in argv]
    if argv and argv[0].endswith(".py") and not os.path.isabs(argv[0]):
        argv[0] = os.path.join(ROOT, argv[0])
    full_env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **(env or {})}
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if expect is not None:
        assert proc.returncode == expect, (f"{argv}\nexit {proc.returncode}\n--- stdout\n{proc.stdout[-2000:]}"
                                           f"\n--- stderr\n{proc.stderr[-3000:]}")
    return proc


# The entry function behind each script and module a test may run in this interpreter.
_ENTRIES = {"main.py": "train_main", "inference.py": "inference_main", "split_data.py": "split_main",
            "-m ga": "main", "-m ga.synthetic": "synth_main"}


def run_here(*argv, cwd=None, expect=0, env=None, entry=None):
    """Run a script or module as `run_script` does, but in this interpreter: the same entry
    function (`ga.cli.*_main(argv)`) the script calls, with its stdout and stderr captured,
    in `cwd` and with `env` added to the environment for the call. It saves the 7 s of CPU a
    fresh interpreter spends importing TensorFlow; the documented commands themselves run in
    fresh interpreters in test_commands.py. A bench/ or scripts/ file runs its `__main__` block
    (runpy) with this argv. Returns a CompletedProcess."""
    import ga.cli

    argv = [str(a) for a in argv]
    key = " ".join(argv[:2]) if argv[0] == "-m" else os.path.basename(argv[0])
    if entry is not None:  # a given entry function (an installed console script's) with the script's argv
        args = argv[1:]
    elif key in _ENTRIES:
        entry, args = getattr(ga.cli, _ENTRIES[key]), argv[2:] if argv[0] == "-m" else argv[1:]
    else:  # a bench/ or scripts/ file: its __main__ block with this argv
        entry, args = functools.partial(_run_file, os.path.join(ROOT, argv[0])), argv[1:]
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    try:
        with contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = entry(args)
            except SystemExit as exc:  # argparse: --help and usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    proc = subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
    if expect is not None:
        assert code == expect, f"{argv}\nexit {code}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    return proc


def _run_file(path, args):
    """A script's `if __name__ == "__main__"` block with sys.argv = [path, *args]; its exit status."""
    saved = sys.argv[:], sys.path[:]
    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(path))  # as `python path` puts the script's folder first
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, sys.path[:] = saved
    return 0


def run_command(argv, cwd, expect=0, env=None, timeout=600):
    """Run an installed command (`argv[0]` a path to an executable) and assert its status."""
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "MPLBACKEND": "Agg", **(env or {})})
    assert proc.returncode == expect, f"{argv}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def read_csv(path):
    """A CSV file's rows as dicts."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def error_lines(proc):
    """The `error:` lines of a command's stderr, after checking it printed no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def one_error_line(proc):
    """The one `error:` line a failed command printed (it must print exactly one, and no
    traceback)."""
    errors = error_lines(proc)
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def makefile_recipe(target):
    """The command lines of a Makefile target, as written (tabs stripped)."""
    lines = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f"{target}:"))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        out.append(line.strip())
    return out
