"""The documentation: README.md as a landing page, the MkDocs site in docs/ (built with
`mkdocs build --strict` as `make docs` builds it, and served as `make docs-serve` serves it),
its generated reference (every command, option and configuration key), and the docstrings of
the public API that the site's API reference is made from.

The commands shown on the pages are run by test_commands.py (its docstring lists them)."""

import dataclasses
import glob
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from conftest import ROOT
from helpers import makefile_recipe
from plant_peers import free_port

pytest.importorskip("mkdocs", reason="the docs extra (pip install '.[docs]') builds the site")

DOCS_ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def _reference():
    spec = importlib.util.spec_from_file_location("docs_reference", os.path.join(ROOT, "scripts", "docs_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recipe(target):
    """The last command line of a Makefile target, as argv for this interpreter."""
    body = makefile_recipe(target)
    assert any('-e ".[docs]"' in l for l in body), body  # the target installs the docs extra first
    words = body[-1].split()
    assert words[:2] == ["$(DOCS_ENV)", "$(PY)"], words
    return [sys.executable, *words[2:]]


def _build(config_dir, site, expect=0):
    argv = _recipe("docs")
    argv[argv.index("--site-dir") + 1] = str(site)
    proc = subprocess.run(argv, cwd=config_dir, env=DOCS_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


# ---------------------------------------------------------------------------- the site


def test_make_docs_builds_every_page_and_the_generated_reference(tmp_path):
    """`make docs`'s build (strict: any warning fails it) in a fresh interpreter: every page
    of docs/ is in the navigation and built, the reference pages are generated, the API page
    holds the docstrings."""
    _build(ROOT, tmp_path / "site")
    site = tmp_path / "site"
    for page in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True):
        rel = os.path.relpath(page, os.path.join(ROOT, "docs"))[:-3]
        html = site / ("index.html" if rel == "index" else os.path.join(rel, "index.html"))
        assert html.is_file(), rel
    commands = (site / "reference/commands/index.html").read_text(encoding="utf-8")
    for text in ("ga monitor verify", "--show-detection", "ga synth process", "--lr-find", "--engine"):
        assert text in commands, text
    config = (site / "reference/config/index.html").read_text(encoding="utf-8")
    for text in ("monitor.min_area", "training.early_stopping.f1_threshold", "data.augment.rotation"):
        assert text in config, text
    api = (site / "reference/api/index.html").read_text(encoding="utf-8")
    for text in ("find_learning_rate", "runs_root", "ModelError", "MonitorResult"):
        assert text in api, text


def test_a_broken_link_or_a_page_outside_the_navigation_fails_the_build(tmp_path):
    """The strict build is what keeps links and pages honest: a copy of the site with a link
    to a missing anchor, a link to a missing page and a page left out of the navigation does
    not build, and the error names each."""
    shutil.copytree(os.path.join(ROOT, "docs"), tmp_path / "docs")
    shutil.copy(os.path.join(ROOT, "mkdocs.yml"), tmp_path / "mkdocs.yml")
    shutil.copytree(os.path.join(ROOT, "scripts"), tmp_path / "scripts",
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink(os.path.join(ROOT, "ga"), tmp_path / "ga")
    with open(tmp_path / "docs/index.md", "a", encoding="utf-8") as fh:
        fh.write("\n[a](monitoring.md#no-such-section) and [b](no-such-page.md)\n")
    (tmp_path / "docs/orphan.md").write_text("# Not in the navigation\n", encoding="utf-8")
    proc = _build(tmp_path, tmp_path / "site", expect=1)
    for text in ("#no-such-section", "no-such-page.md", "orphan.md"):
        assert text in proc.stderr, text


def test_make_docs_serve_serves_the_site_on_the_loopback(tmp_path):
    """`make docs-serve`'s command (its port swapped for a free one) serves the home page and
    the generated reference, on 127.0.0.1 only."""
    argv = _recipe("docs-serve")
    at = argv.index("--dev-addr") + 1
    assert argv[at].startswith("127.0.0.1:"), argv[at]
    port = free_port()
    argv[at] = f"127.0.0.1:{port}"
    proc = subprocess.Popen(argv, cwd=ROOT, env=DOCS_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        pages, deadline = {}, time.monotonic() + 120
        while time.monotonic() < deadline and len(pages) < 2:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            for path in ("/", "/reference/commands/"):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                        pages[path] = resp.read().decode("utf-8")
                except OSError:
                    time.sleep(0.5)
        assert "Two paths" in pages["/"]
        assert "ga monitor serve" in pages["/reference/commands/"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------- the generated reference


def _options(parser):
    """{option or positional name: its parser action} that `--help` shows, subcommands apart."""
    import argparse

    out = {}
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        for name in action.option_strings or [action.metavar or action.dest.upper()]:
            out[name] = action
    return out


def _all_parsers():
    """(prog, parser) of every `ga` command and subcommand, walked from the registry."""
    import argparse

    from ga.cli import COMMANDS, command
    from ga.cli.monitor import SUBCOMMANDS

    todo = [(f"ga {name}", command(name).parser(f"ga {name}")) for name in COMMANDS]
    for sub in SUBCOMMANDS:
        module = importlib.import_module(f"ga.cli.{sub}")
        todo.append((f"ga monitor {sub}", module.main.__self__.parser(f"ga monitor {sub}")))
    found = []
    while todo:
        prog, parser = todo.pop(0)
        found.append((prog, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{prog} {kind}", p) for kind, p in action.choices.items()]
    return found


def _sections(page):
    """{heading: its text} of a page's `## ` sections."""
    parts = re.split(r"^## (.+)$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _row(section, name):
    """The table row that lists an option or key (None when there is none)."""
    return next((l for l in section.splitlines() if l.startswith("| ") and re.search(rf"`{re.escape(name)}\b", l)),
                None)


def missing_commands(page):
    """Commands, options and arguments the commands page lacks, or lists without a meaning."""
    sections, missing = _sections(page), []
    for prog, parser in _all_parsers():
        if prog not in sections:
            missing.append(prog)
            continue
        for name in _options(parser):
            row = _row(sections[prog], name)
            if row is None or not row.rstrip(" |").rsplit("|", 1)[-1].strip():
                missing.append(f"{prog} {name}")
    return missing


def _leaves(value, prefix=""):
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1]


def missing_keys(page):
    """Configuration keys the keys page lacks (or lists without a meaning): every field of the
    defaults and every key a shipped config sets."""
    from ga.config import Config

    keys = set(_leaves(dataclasses.asdict(Config())))
    for path in glob.glob(os.path.join(ROOT, "configs", "*.yaml")):
        data = yaml.safe_load(open(path, encoding="utf-8")) or {}
        data.pop("extends", None)
        keys |= {k for k in _leaves(data) if not re.search(r"\.(class_weight)\.", k)}  # a class-weight mapping's classes
    rows = {re.match(r"^\| `([^`]+)`", l).group(1): l for l in page.splitlines() if re.match(r"^\| `[\w.]+` \|", l)}
    return sorted(k for k in keys if k not in rows or not rows[k].rstrip(" |").rsplit("|", 1)[-1].strip())


def test_the_reference_lists_every_command_option_and_config_key():
    """Walked from the parsers and from the defaults and the shipped configs, independently of
    the generator: nothing is missing, and each has a meaning. The check bites: a page with
    one row taken out fails it."""
    ref = _reference()
    commands, config = ref.commands_page(), ref.config_page()
    assert missing_commands(commands) == []
    assert missing_keys(config) == []
    assert len(_all_parsers()) >= 19  # 12 commands, 3 monitor subcommands, 4 synth kinds
    row = _row(_sections(commands)["ga monitor"], "--show-detection")
    assert missing_commands(commands.replace(row + "\n", "")) == ["ga monitor --show-detection"]
    row = next(l for l in config.splitlines() if l.startswith("| `monitor.min_area` |"))
    assert missing_keys(config.replace(row + "\n", "")) == ["monitor.min_area"]


def test_the_reference_script_prints_a_page_and_refuses_other_words():
    ok = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "docs_reference.py"), "config"],
                        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert ok.returncode == 0 and ok.stdout.startswith("# Configuration keys"), ok.stderr
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "docs_reference.py"), "bogus"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- README and the two paths


def _links(doc):
    """The pages a page links to (relative .md links, resolved; anchors dropped)."""
    text = open(doc, encoding="utf-8").read()
    out = set()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.split("#")[0]
        if path.endswith(".md") and "://" not in path:
            out.add(os.path.normpath(os.path.join(os.path.dirname(doc), path)))
    return out


def _within(start, clicks):
    seen, frontier = {start}, {start}
    for _ in range(clicks):
        frontier = {t for page in frontier for t in _links(page) if os.path.isfile(t)} - seen
        seen |= frontier
    return seen


def _fenced(doc):
    text = open(doc, encoding="utf-8").read()
    return "\n".join(re.findall(r"^```\w*\n(.*?)^```", text, re.S | re.M))


def _monitors_frames(doc):
    return re.search(r"python -m ga monitor \S+ --model ", _fenced(doc)) is not None


def _trains_on_kaggle(doc):
    return "cephalexin-reactive-crystallization" in open(doc, encoding="utf-8").read() and \
        "python main.py --config configs/resnet101.yaml" in _fenced(doc)


@pytest.mark.parametrize("home", ["README.md", "docs/index.md"])
def test_a_chemist_and_a_researcher_reach_their_page_in_two_clicks(home):
    """From the README (and the site's home page): a page that monitors a folder of frames
    with a model, and the Kaggle data's layout with the study's training command, are each at
    most two links away."""
    reach = _within(os.path.join(ROOT, home), 2)
    assert any(_monitors_frames(p) for p in reach), sorted(reach)
    assert any(_trains_on_kaggle(p) for p in reach), sorted(reach)


def test_the_readme_is_a_landing_page():
    """Under 200 lines, with the two commands, the study's three and links into every part of
    the site's navigation it replaced."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert len(text.splitlines()) < 200
    for command in ("make demo", "make test", "python split_data.py", "python main.py --config configs/resnet101.yaml",
                    "python inference.py folder/"):
        assert command in _fenced(os.path.join(ROOT, "README.md")), command
    linked = {os.path.relpath(p, ROOT) for p in _links(os.path.join(ROOT, "README.md"))}
    nav = _nav_pages()
    for section in ("Process monitoring", "Training and replication"):
        assert any(f"docs/{p}" in linked for p in nav[section]), section


def _nav_pages():
    """{top-level section: its pages} of mkdocs.yml's navigation."""
    text = open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8").read()
    nav = yaml.safe_load("nav:" + text.split("\nnav:", 1)[1])["nav"]
    out = {}
    for entry in nav:
        (title, value), = entry.items()
        out[title] = [value] if isinstance(value, str) else [next(iter(e.values())) for e in value]
    return out


# ---------------------------------------------------------------------------- the API's docstrings


def _public_api():
    import ga

    for name in ga.__all__:
        obj = getattr(ga, name)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == "ga.api":
            yield name, obj


def test_every_public_function_documents_its_arguments_returns_raises_and_an_example():
    """What the site's API reference is generated from: each function of `ga.api` that `import
    ga` exports names every parameter under Args, has Returns, Raises and Examples (doctest
    lines); each class has Args and Examples."""
    found = dict(_public_api())
    assert {"train", "load", "monitor", "evaluate", "split", "calibrate", "Run", "Predictor"} <= set(found)
    problems = []
    for name, obj in found.items():
        doc = inspect.getdoc(obj) or ""
        sections = ("Args", "Examples") if inspect.isclass(obj) else ("Args", "Returns", "Raises", "Examples")
        problems += [f"{name}: no {s}:" for s in sections if not re.search(rf"^{s}:$", doc, re.M)]
        if ">>> " not in doc:
            problems.append(f"{name}: no doctest line")
        target = obj.__init__ if inspect.isclass(obj) else obj
        for param in list(inspect.signature(target).parameters)[1 if inspect.isclass(obj) else 0:]:
            if not re.search(rf"^\s+\**{param}:", doc, re.M):
                problems.append(f"{name}: {param} not under Args")
    assert problems == []
