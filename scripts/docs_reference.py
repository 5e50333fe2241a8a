"""The documentation site's generated reference: every command with its options (from the
parsers of ga.cli) and every configuration key with its type, default and meaning (from the
dataclasses of ga.config and the comments beside their fields).

An MkDocs hook (mkdocs.yml `hooks:`): `on_files` adds `reference/commands.md` and
`reference/config.md` to the site at build time, so the pages cannot drift from the code.
Run alone, it prints one of them: `python scripts/docs_reference.py commands|config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
import typing
from typing import Any, Iterator

# The older spellings of each command (they parse the same options).
ALIASES = {
    "split": ["python split_data.py", "ga-split"],
    "train": ["python main.py", "ga-train"],
    "infer": ["python inference.py", "ga-infer"],
    "evaluate": ["python inference.py FOLDER --evaluate"],
    "compare": ["python inference.py FOLDER --evaluate --compare B"],
    "review": ["python inference.py FOLDER --review"],
    "scan": ["python inference.py FRAME --scan"],
    "synth": ["python -m ga.synthetic"],
    "import": ["python -m ga.georgia import"],
    "report": ["python -m ga.report"],
}


# ---------------------------------------------------------------------------- commands


def commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(`ga <command>`, its parser) for every command and subcommand, in the order of `ga --help`
    (a subcommand's parser without a description of its own gets its help line as one)."""
    from ga.cli import COMMANDS, command
    from ga.cli._base import Command
    from ga.cli.monitor import SUBCOMMANDS

    for name in COMMANDS:
        parser = command(name).parser(f"ga {name}")
        yield from _with_subparsers(f"ga {name}", parser)
        if name == "monitor":
            for sub in SUBCOMMANDS:
                module = importlib.import_module(f"ga.cli.{sub}")
                cls = next(v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Command)
                           and v.__module__ == module.__name__)
                yield f"ga monitor {sub}", cls().parser(f"ga monitor {sub}")


def _with_subparsers(prog: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in action._choices_actions}
            for kind, sub in action.choices.items():
                sub.description = sub.description or helps.get(kind)
                yield from _with_subparsers(f"{prog} {kind}", sub)


def shown_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments `--help` shows (not help itself, the subcommand choice or hidden ones)."""
    return [a for a in parser._actions if a.help != argparse.SUPPRESS
            and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _text(text: Any) -> str:
    """Plain text as Markdown: `<` and `>` outside code spans escaped (`<stem>` is no HTML tag)."""
    parts = str(text).split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _cell(text: Any) -> str:
    return _text(text).replace("|", "\\|").replace("\n", " ")


def _argument(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest.upper()}`" + (" ..." if action.nargs in ("*", "+") else "")
    metavar = ""
    if action.nargs != 0:
        meta = action.metavar or (("{" + ",".join(map(str, action.choices)) + "}") if action.choices
                                  else action.dest.upper())
        metavar = " " + (" ".join(meta) if isinstance(meta, tuple) else meta)
        if action.nargs in ("*", "+"):
            metavar += " ..."
        elif action.nargs == "?":
            metavar = f" [{metavar.strip()}]"
    return ", ".join(f"`{flag}{metavar if flag.startswith('--') or len(action.option_strings) == 1 else ''}`"
                     for flag in action.option_strings)


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS or action.default == []:
        return ""
    return f"`{action.default}`"


def _meaning(action: argparse.Action) -> str:
    text = (action.help or "").replace("%(default)s", str(action.default))
    text = re.sub(r"%\((\w+)\)s", lambda m: str(getattr(action, m.group(1), "")), text)
    return _cell(text)


def command_section(prog: str, parser: argparse.ArgumentParser) -> list[str]:
    name = prog.split(" ", 1)[1]
    out = [f"## {prog}", ""]
    if name in ALIASES:
        out += ["Also: " + ", ".join(f"`{a}`" for a in ALIASES[name]) + ".", ""]
    if parser.description:
        out += [_text(parser.description.strip()), ""]
    usage = parser.format_usage().strip()
    out += ["```text", usage.replace("usage: ", "", 1), "```", ""]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        out += ["| subcommand | what |", "|---|---|"]
        helps = {c.dest: c.help for c in action._choices_actions}
        out += [f"| [`{prog} {kind}`](#{_anchor(f'{prog} {kind}')}) | {_cell(helps.get(kind) or '')} |"
                for kind in action.choices]
        out.append("")
    actions = shown_actions(parser)
    if actions:
        out += ["| argument | default | meaning |", "|---|---|---|"]
        out += [f"| {_argument(a)} | {_default(a)} | {_meaning(a)} |" for a in actions]
        out.append("")
    return out


def _anchor(heading: str) -> str:
    """The id MkDocs gives a heading (the toc extension's slugify)."""
    from markdown.extensions.toc import slugify

    return slugify(heading, "-")


def commands_page() -> str:
    from ga.cli import usage

    found = list(commands())
    out = ["# Commands", "",
           "Every `ga` command and its options, generated from the command line's own parsers when the site is "
           "built (`ga <command> --help` prints the same). Exit statuses: 0 success, 1 finished with some inputs "
           "skipped (each listed with its reason), 2 usage or configuration error (one line on stderr), "
           "130 interrupted.", "",
           "`ga` is also `python -m ga` from a clone; the older spellings (`python main.py`, `ga-train`, ...) "
           "parse the same options as the command they name.", "",
           "```text", usage("ga"), "```", "",
           "| command | |", "|---|---|"]
    out += [f"| [`{prog}`](#{_anchor(prog)}) | {_cell((p.description or '').split('. ')[0].strip())} |"
            for prog, p in found]
    out.append("")
    for prog, parser in found:
        out += command_section(prog, parser)
    return "\n".join(out)


# ---------------------------------------------------------------------------- configuration keys


def field_comments(cls: type) -> dict[str, str]:
    """{field: its comment}: the comment lines right above a field and the one beside it."""
    lines = inspect.getsource(cls).splitlines()
    comments, above = {}, []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^    (\w+)\s*:", line)
        if match and not stripped.startswith(("def ", "@")):
            beside = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            comments[match.group(1)] = " ".join([*above, beside]).strip()
        above = []
    return comments


def config_keys(cls: type | None = None, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any, str]]:
    """(dotted key, field, its type, its comment) for every leaf and section of the config."""
    from ga.config import Config

    cls = cls or Config
    comments, hints = field_comments(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        yield key, f, hints[f.name], comments.get(f.name, "")
        if dataclasses.is_dataclass(hints[f.name]):
            yield from config_keys(hints[f.name], key + ".")


def type_text(tp: Any) -> str:
    """A field's type as a reader says it: `int`, `list of float`, `"auto" or int`, `str or none`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " or ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin is typing.Union:
        parts = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(parts + (["none"] if type(None) in args else []))
    if origin in (list, tuple):
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    return getattr(tp, "__name__", str(tp))


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def section_doc(cls: type) -> str:
    """A section's docstring ("" for the one dataclasses writes)."""
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(cls.__name__ + "(") else doc.replace("\n", " ")


def config_page() -> str:
    from ga.config import Config
    from ga.typed_yaml import flow_yaml

    hints = typing.get_type_hints(Config)
    out = ["# Configuration keys", "",
           "Every key of a configuration file, generated from the dataclasses of `ga/config.py` (types, defaults) "
           "and the comments beside their fields (meanings) when the site is built. A YAML file sets any of "
           "them by section; `extends: parent.yaml` starts from another file; `--set section.key=value` "
           "changes one on the command line, typed by the field. Precedence, lowest first: these defaults, "
           "the parent file, the file, `--set`. Unknown keys (with the closest name), wrong types and "
           "out-of-range values stop the command before it starts.", "",
           "| section | what |", "|---|---|"]
    sections = [f.name for f in dataclasses.fields(Config)]
    for name in sections:
        out.append(f"| [`{name}`](#{name}) | {_cell(section_doc(hints[name]).split(chr(10) + chr(10))[0])} |")
    out.append("")
    current = None
    for key, f, tp, comment in config_keys():
        section = key.split(".")[0]
        if section != current:
            current = section
            out += ["", f"## {section}", ""]
            if section_doc(hints[section]):
                out += [_text(section_doc(hints[section])), ""]
            out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        if "." not in key:
            continue
        if dataclasses.is_dataclass(tp):
            out.append(f"| `{key}` | section | | {_cell(comment or section_doc(tp) or 'the keys below')} |")
            continue
        out.append(f"| `{key}` | {_cell(type_text(tp))} | `{_cell(flow_yaml(_field_default(f)))}` | {_cell(comment)} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- the MkDocs hook


def on_files(files: Any, config: Any) -> Any:
    """MkDocs event: add the generated reference pages to the site's files."""
    from mkdocs.structure.files import File

    for name, page in PAGES.items():
        files.append(File.generated(config, f"reference/{name}.md", content=page()))
    return files


PAGES = {"commands": commands_page, "config": config_page}  # reference/<name>.md

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in PAGES:
        print("usage: python scripts/docs_reference.py commands|config", file=sys.stderr)
        sys.exit(2)
    print(PAGES[sys.argv[1]]())
