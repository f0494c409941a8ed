"""The READMEs stay true to the code: every command they show is accepted, the set-up commands work,
every "where is X" pointer names a file that defines that function or class, and every relative link
resolves (file and heading).

Commands are taken from fenced code blocks (a line starting with ``sllmsim`` or ``python -m``, with
``\\`` continuations, ``&&``/``;``/``|`` chains and ``#`` comments) and from inline code spans that
start with ``sllmsim `` or ``python -m``. An ``sllmsim`` command must name an existing subcommand
path, its ``--help`` must exit 0 in process, and each flag it shows must appear in that help. A
``python -m MODULE`` command must be importable, and ``python -m MODULE --help`` (run in process with
``runpy``, as ``python -m`` does; pytest's in a subprocess) must exit 0 and list each flag shown.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
import traceback
import warnings
from functools import lru_cache
from pathlib import Path

import pytest
from repo_paths import REPO

from sllmsim.cli import main as sllmsim_main

#: Folders never searched for READMEs (virtual environments, run outputs, caches).
_SKIP_DIRS = {"runs", "models", "build", "dist", "node_modules", "__pycache__", "cache"}


def _readmes() -> list[Path]:
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                         and not d.endswith(".egg-info"))
        if "README.md" in files:
            found.append(Path(root) / "README.md")
    return found


READMES = _readmes()
_IDS = [str(p.relative_to(REPO)) for p in READMES]
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: Fenced blocks whose lines are shell commands (a `plaintext` block is log output, `yaml` a file).
_SHELL_LANGS = {"", "bash", "sh", "shell", "console"}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _fenced(text: str) -> list[tuple[str, str]]:
    return [(m.group(1).strip(), m.group(2)) for m in _FENCE.finditer(text)]


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return _FENCE.sub("", text)


def _code_spans(text: str) -> list[str]:
    """Inline code of the prose, a span wrapped over lines joined with a space (as Markdown does)."""
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", _prose(text))]


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _commands_in_shell(block: str) -> list[list[str]]:
    """Each `sllmsim ...` / `python -m ...` command of a shell block, as tokens."""
    joined = re.sub(r"\\\n", " ", block)
    commands = []
    pending = ""  # lines of a quoted argument that spans several lines
    for line in joined.splitlines():
        line = f"{pending}\n{line}" if pending else line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        try:
            tokens = _tokens(line)
        except ValueError:  # no closing quotation yet
            pending = line
            continue
        pending = ""
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token and set(token) <= set(";&|"):
                if segment:
                    commands.append(segment)
                segment = []
            else:
                segment.append(token)
    return [c for c in commands if _is_ours(c)]


def _is_ours(tokens: list[str]) -> bool:
    if not tokens:
        return False
    if tokens[0] == "sllmsim":
        return True
    return len(tokens) >= 3 and tokens[0] in ("python", "python3") and tokens[1] == "-m"


def _commands(path: Path) -> list[tuple[str, list[str]]]:
    """(where, tokens) of every command a README shows."""
    text = _text(path)
    found = []
    for lang, block in _fenced(text):
        if lang in _SHELL_LANGS:
            found += [("code block", c) for c in _commands_in_shell(block)]
    for span in _code_spans(text):
        if span.startswith("sllmsim ") or span.startswith("python -m "):
            # Placeholders such as `[--out DIR]` or `...` are not tokens of the command.
            tokens = [t.strip("[]") for t in _tokens(span.replace("...", " "))]
            tokens = [t for t in tokens if t and not set(t) <= set(";&|")]
            found.append(("inline code", tokens))
    return found


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if re.match(r"^--?[A-Za-z]", a)]


def _flag_in(flag: str, help_text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


@lru_cache(maxsize=None)
def _sllmsim_help(path: tuple[str, ...]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = sllmsim_main([*path, "--help"])
    return rc, out.getvalue()


def _command_path(args: list[str]) -> tuple[tuple[str, ...], list[str], str]:
    """Split `sllmsim` arguments into the subcommand path and the rest; "" or the reason it fails."""
    import click

    from sllmsim.cli import cli

    command, path = cli, []
    ctx = click.Context(cli)
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(ctx, args[0])
        if sub is None:
            return tuple(path), args, f"`sllmsim {' '.join([*path, args[0]])}` is not a command"
        command, path, args = sub, [*path, args[0]], args[1:]
    return tuple(path), args, ""


def _all_commands() -> list[tuple[str, str, list[str]]]:
    return [(str(p.relative_to(REPO)), where, tokens) for p in READMES for where, tokens in _commands(p)]


def _module_commands() -> dict[str, set[str]]:
    """Module -> every flag shown with `python -m MODULE` in any README."""
    modules: dict[str, set[str]] = {}
    for _, _, tokens in _all_commands():
        if tokens[0] != "sllmsim":
            modules.setdefault(tokens[2], set()).update(_flags(tokens[3:]))
    return modules


def _module_help(module: str) -> tuple[int, str]:
    """Exit status and output of `python -m MODULE --help`: run in this process as `python -m` runs it
    (``runpy``, as ``__main__``), so that a module whose imports other tests have paid (torch) costs
    nothing more; pytest itself, the runner of this very test, in a subprocess."""
    if module == "pytest":
        proc = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=REPO, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        return proc.returncode, proc.stdout + proc.stderr
    out = io.StringIO()
    argv = sys.argv[:]
    sys.argv = [module, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "found in sys.modules ... prior to execution"
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:  # what `python -m` would print as a traceback, exiting 1
        out.write(traceback.format_exc())
        rc = 1
    finally:
        sys.argv = argv
    return rc, out.getvalue()


# ------------------------------------------------------------------------------------- (a) commands

def test_the_readmes_show_commands():
    """The scan finds the commands (a broken parser would make the checks below vacuous)."""
    shown = _all_commands()
    main_readme = [t for p, _, t in shown if p == "README.md"]
    assert any(t[:2] == ["sllmsim", "run"] for t in main_readme)
    assert any(t[:3] == ["python", "-m", "pytest"] for t in main_readme)
    assert len({tuple(t[:2]) for _, _, t in shown if t[0] == "sllmsim"}) >= 10


@pytest.mark.parametrize("readme", READMES, ids=_IDS)
def test_every_sllmsim_command_shown_is_accepted(readme):
    problems = []
    for where, tokens in _commands(readme):
        if tokens[0] != "sllmsim":
            continue
        shown = " ".join(tokens)
        path, rest, error = _command_path(tokens[1:])
        if error:
            problems.append(f"{where} `{shown}`: {error}")
            continue
        rc, help_text = _sllmsim_help(path)
        if rc != 0:
            problems.append(f"{where} `{shown}`: `sllmsim {' '.join(path)} --help` exited {rc}")
            continue
        for flag in _flags(rest):
            if not _flag_in(flag, help_text):
                problems.append(f"{where} `{shown}`: `sllmsim {' '.join(path)}` has no option {flag}")
    assert not problems, f"{readme.relative_to(REPO)}:\n" + "\n".join(problems)


def _section(path: Path, heading: str) -> str:
    text = _text(path)
    assert f"\n## {heading}\n" in text, f"{path.relative_to(REPO)} has no section '## {heading}'"
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(("readme", "heading", "command"), [
    ("sllmsim/sim/README.md", "Running a trace", ("run",)),
    ("live/README.md", "Operator flags", ("live",)),
])
def test_option_tables_list_exactly_the_commands_options(readme, heading, command):
    """An option table names every option of its command, and only those."""
    import click

    from sllmsim.cli import cli

    rows = [line for line in _section(REPO / readme, heading).splitlines() if line.startswith("| `-")]
    shown = {flag for row in rows for flag in re.findall(r"`(--[\w-]+)", row.split("|")[1])}
    cmd = cli
    for name in command:
        cmd = cmd.get_command(click.Context(cli), name)
    options = {opt for p in cmd.params if isinstance(p, click.Option) for opt in p.opts if opt.startswith("--")}
    options.discard("--help")
    assert shown == options, (f"{readme} '{heading}': missing {sorted(options - shown)}, "
                              f"not options of sllmsim {' '.join(command)}: {sorted(shown - options)}")


# ------------------------------------------------------------------------------------ (b) set-up

def _setup_commands() -> list[str]:
    text = _text(REPO / "README.md")
    section = text.split("\n## Set-up\n", 1)[1].split("\n## ", 1)[0]
    blocks = [block for lang, block in _fenced(section) if lang in _SHELL_LANGS]
    assert blocks, "README.md: the Set-up section has no shell code block"
    return [line.split("  #", 1)[0].strip() for line in blocks[0].splitlines() if line.strip()]


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(_text(REPO / "pyproject.toml"))


def test_setup_install_names_the_constraints_file_and_existing_extras():
    installs = [c for c in _setup_commands() if c.startswith("pip install")]
    assert len(installs) == 1, installs
    tokens = shlex.split(installs[0])
    assert "-c" in tokens and (REPO / tokens[tokens.index("-c") + 1]).is_file()
    target = tokens[tokens.index("-e") + 1]
    match = re.fullmatch(r"\.\[([\w,-]+)\]", target)
    assert match, f"README.md set-up installs {target!r}, expected '.[extra,...]'"
    extras = set(match.group(1).split(","))
    known = set(_pyproject()["project"]["optional-dependencies"])
    assert extras <= known, f"README.md set-up names extras {sorted(extras - known)} not in pyproject.toml"
    # CI installs at least what the README does (and runs the same tests).
    ci_install = next(line for line in _text(REPO / ".ci" / "run").splitlines() if "-c constraints.txt" in line)
    ci_extras = set(re.search(r"\.\[([\w,-]+)\]", ci_install).group(1).split(","))
    assert extras <= ci_extras


def test_setup_test_command_is_the_one_ci_runs():
    tests = [c for c in _setup_commands() if "pytest" in c]
    ci_lines = [line.strip() for line in _text(REPO / ".ci" / "run").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert tests == [ci_lines[-1]], f"README.md tests with {tests}, .ci/run with {ci_lines[-1]!r}"


def test_setup_example_run_works(tmp_path, monkeypatch):
    runs = [shlex.split(c) for c in _setup_commands() if c.startswith("sllmsim run")]
    assert len(runs) == 1, runs
    monkeypatch.chdir(REPO)  # the README's paths are relative to the repository root
    out = tmp_path / "run"
    assert sllmsim_main([*runs[0][1:], "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == summary["completed"] == 2
    log = (out / "scheduler.log").read_text()
    # "the spec's two-server example": each model on the node its target_nodes name.
    assert "Allocated node 0 for model opt-2.7b" in log and "Allocated node 1 for model opt-1.3b" in log
    assert {p.name for p in out.iterdir()} >= {"requests.csv", "instances.csv", "timeseries.csv", "latency_cdf.png"}


# ------------------------------------------------------------------------------ (c) where is X

_POINTER = re.compile(r"`([\w./-]+\.py)`\s+`([A-Za-z_][\w.]*)`")


_NAME = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def _pointers(text: str) -> list[tuple[str, str]]:
    """(file, name) of each `file.py` `name` pair in prose; in a table row, every `name` after a
    `file.py` in the same cell belongs to that file (`a.py` `f`, `g`)."""
    found = []
    for line in _prose(text).splitlines():
        if not line.startswith("|"):
            found += _POINTER.findall(line) if "`" in line else []
            continue
        for cell in line.strip().strip("|").split("|"):
            current = None
            for span in re.findall(r"`([^`]+)`", cell):
                if span.endswith(".py"):
                    current = span
                elif current and _NAME.fullmatch(span):
                    found.append((current, span))
    # Pairs split over two lines of prose.
    found += [p for p in _POINTER.findall(_prose(text)) if p not in found]
    return found


def _dotted_names(text: str) -> list[str]:
    """Importable names the prose shows as code: `sllmsim.x.y`, `live.x.Y` (a call's `(...)` dropped)."""
    names = []
    for span in _code_spans(text):
        name = re.sub(r"\(.*\)$", "", span)
        if re.fullmatch(r"(sllmsim|live)(\.[A-Za-z_]\w*)+", name):
            names.append(name)
    return names


def _resolve_dotted(name: str) -> str:
    """"" when ``name`` is a module, or a class/function/constant of one; else the reason."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:i])
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if path.is_file():
            rest = ".".join(parts[i:])
            if not rest or _defines(_module_tree(str(path.relative_to(REPO))), rest, imports=True):
                return ""
            return f"{path.relative_to(REPO)} defines no `{rest}`"
    return "no such module"


@lru_cache(maxsize=None)
def _module_tree(path: str) -> ast.Module:
    return ast.parse((REPO / path).read_text(encoding="utf-8"), filename=path)


def _defines(tree: ast.Module, dotted: str, imports: bool = False) -> bool:
    """Whether ``dotted`` (``name``, ``Class.method``, ``function.inner``) is defined in ``tree``
    (with ``imports``, a module-level name it imports counts too: ``module.name`` works in Python)."""
    body = tree.body
    if imports and "." not in dotted and any(
            (a.asname or a.name).split(".")[0] == dotted
            for node in body if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names):
        return True
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        found = None
        for node in body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == part:
                found = node
            elif i == len(parts) - 1 and isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == part for t in targets):
                    return True
        if found is None:
            return False
        body = found.body
    return True


def test_the_where_is_x_table_points_somewhere_in_every_cell():
    text = _text(REPO / "README.md")
    section = text.split("\n## Where is X\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # after header and rule
    concerns = {"arrival", "admission", "placement decided", "placement applied", "scaling", "loading",
                "reclaim", "migration", "records", "metrics", "reports"}
    named = {row.split("|")[1].strip() for row in rows}
    missing = {c for c in concerns if not any(c in name for name in named)}
    assert not missing, f"README.md's where-is-X table lacks rows for {sorted(missing)}"
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")][1:]
        for cell in cells:
            assert not cell or _pointers(cell), f"README.md where-is-X: cell {cell!r} names no `file.py` `name`"


@pytest.mark.parametrize("readme", READMES, ids=_IDS)
def test_every_code_pointer_resolves(readme):
    problems = []
    for path, name in _pointers(_text(readme)):
        if not (REPO / path).is_file():
            problems.append(f"`{path}` does not exist")
        elif not _defines(_module_tree(path), name):
            problems.append(f"`{path}` defines no `{name}`")
    assert not problems, f"{readme.relative_to(REPO)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("readme", READMES, ids=_IDS)
def test_every_dotted_name_resolves(readme):
    problems = [f"`{name}`: {why}" for name in _dotted_names(_text(readme)) if (why := _resolve_dotted(name))]
    assert not problems, f"{readme.relative_to(REPO)}:\n" + "\n".join(problems)


def test_the_pointer_check_can_fail():
    tree = _module_tree("sllmsim/cli/__init__.py")
    assert _defines(tree, "main") and _defines(tree, "LazyGroup.get_command") and _defines(tree, "COMMANDS")
    assert not _defines(tree, "LazyGroup.no_such_method") and not _defines(tree, "no_such_function")
    assert len(_pointers(_text(REPO / "README.md"))) >= 40
    assert ("sllmsim/sim/engine.py", "Simulation._admit") in _pointers(_text(REPO / "README.md"))
    assert _resolve_dotted("sllmsim.core.placement.place") == "" and _resolve_dotted("sllmsim.core") == ""
    assert _resolve_dotted("sllmsim.core.placement.no_such") and _resolve_dotted("sllmsim.no_such.x")


# ---------------------------------------------------------------------------------------- links

def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def _anchors(path: Path) -> frozenset[str]:
    anchors, seen = set(), {}
    for line in _prose(_text(path)).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(anchors)


def test_slugs_follow_github():
    assert _slug("`storage_aware` and the reference's own decisions (`serverlessllm`)") == \
        "storage_aware-and-the-references-own-decisions-serverlessllm"
    assert _slug("Fidelity: calibrate and validate") == "fidelity-calibrate-and-validate"


@pytest.mark.parametrize("readme", READMES, ids=_IDS)
def test_every_relative_link_resolves(readme):
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(_text(readme))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (readme.parent / file_part).resolve() if file_part else readme
        if not dest.exists():
            problems.append(f"link {target!r}: {file_part} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"link {target!r}: {dest.relative_to(REPO)} has no heading #{anchor}")
    assert not problems, f"{readme.relative_to(REPO)}:\n" + "\n".join(problems)


def test_the_folder_readmes_are_linked_from_the_map():
    links = set(re.findall(r"\]\(([^)#\s]+)", _text(REPO / "README.md")))
    for folder in ("sllmsim/sim", "live", "traces", "experiments"):
        assert f"{folder}/README.md" in links


# ------------------------------------------------------------------------ (a) `python -m` commands

def test_every_python_module_command_shown_is_accepted():
    modules = _module_commands()
    assert "pytest" in modules and "sllmsim.bench.sim" in modules
    problems = []
    for module, flags in sorted(modules.items()):
        if importlib.util.find_spec(module) is None:
            problems.append(f"`python -m {module}`: no such module")
            continue
        if module.split(".")[0] == "live" and importlib.util.find_spec("torch") is None:
            continue  # live mode's extras are not installed here
        rc, help_text = _module_help(module)
        if rc != 0:
            problems.append(f"`python -m {module} --help` exited {rc}: {help_text[-500:]}")
        problems += [f"`python -m {module}` has no option {flag}" for flag in sorted(flags)
                     if not _flag_in(flag, help_text)]
    assert not problems, "\n".join(problems)
