"""The commands the README (and the docs pages a user copies from) give exist as written, without running
them: every ``configs/...yaml`` path, every ``--flag`` given to ``launch.sh`` or to a script, every
``system.guidance.<field>`` override and every field the guidance tables name. (The runs themselves are
covered by the host tests: the drop-in, the smoke routes, resuming.)"""
import ast
import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from .conftest import EXT, REPO

PAGES = [REPO / "README.md", REPO / "docs" / "guidance.md", REPO / "docs" / "tasks.md"]
GUIDANCE = EXT / "guidance" / "dreamsampler_guidance.py"
# this project's configs (threestudio's, named from its checkout, and a trial's configs/parsed.yaml are not)
CONFIG_PATH = re.compile(r"(?<![\w/$.<-])configs/(?:dreamsampler-|variants/|smoke/)[\w./-]*?\.yaml\b")
GUIDANCE_FIELD = re.compile(r"\bsystem\.guidance\.(\w+)")
LAUNCH_SUBCOMMANDS = {"setup", "test", "train", "export", "smoke", "tiny-sd", "tiny-if"}


def bash_blocks(page: Path):
    """The fenced ``bash`` blocks of ``page``, as commands: continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = command.split(" # ")[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def commands():
    return [(page.relative_to(REPO).as_posix(), c) for page in PAGES for c in bash_blocks(page)]


def words(command: str):
    return shlex.split(command, comments=True)


@lru_cache(maxsize=None)
def guidance_fields():
    """The fields of ``DreamSamplerGuidance.Config``, read from the source (no threestudio import)."""
    tree = ast.parse(GUIDANCE.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Config":
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"no Config class in {GUIDANCE}")


@lru_cache(maxsize=None)
def help_text(*program):
    """``program --help``, run from the repository root."""
    proc = subprocess.run([*program, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def flags(args):
    return [a.split("=")[0] for a in args if a.startswith("--")]


def test_pages_have_commands_to_check():
    found = commands()
    assert sum(page == "README.md" for page, _ in found) >= 10
    assert any("system.guidance_type=dreamsampler-guidance" in c for _, c in found)
    readme = (REPO / "README.md").read_text()
    assert len(set(CONFIG_PATH.findall(readme))) >= 9 and "configs/variants/text-to-nerf-sds.yaml" in CONFIG_PATH.findall(readme)
    assert CONFIG_PATH.findall("$TRIAL/configs/parsed.yaml configs/dreamfusion-sd.yaml") == []


def test_every_config_path_exists():
    missing = []
    for page in PAGES:
        for path in CONFIG_PATH.findall(page.read_text()):
            if not (REPO / path).is_file():
                missing.append(f"{page.name}: {path}")
    assert not missing, missing


def test_threestudio_configs_named_by_the_drop_in_exist():
    from .conftest import threestudio_root

    root = threestudio_root()
    if root is None:
        pytest.skip("no threestudio checkout")
    named = {m for _, c in commands() for m in re.findall(r"(?:\$THREESTUDIO_ROOT/|launch\.py --config )(configs/[\w.-]+\.yaml)", c)}
    assert named >= {"configs/dreamfusion-sd.yaml", "configs/dreamfusion-if.yaml"}
    assert all((root / path).is_file() for path in named), named


def test_every_launch_sh_command_uses_a_subcommand_and_flags_launch_sh_accepts():
    accepted = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", help_text(sys.executable, "-m", "dreamsampler_launcher.run_threestudio")))
    bad = []
    for page, command in commands():
        w = words(command)
        if "launch.sh" not in " ".join(w[:2]):
            continue
        i = next(k for k, a in enumerate(w) if a.endswith("launch.sh"))
        sub, args = (w[i + 1] if len(w) > i + 1 else ""), w[i + 2:]
        if sub not in LAUNCH_SUBCOMMANDS:
            bad.append(f"{page}: unknown subcommand {sub!r}: {command}")
        elif sub in ("train", "export") or (sub == "test" and "--config" in args):
            bad += [f"{page}: {f} is not a run_threestudio flag: {command}" for f in flags(args) if f not in accepted]
    assert not bad, "\n".join(bad)


def test_every_script_flag_is_one_the_script_accepts():
    bad = []
    for page, command in commands():
        w = words(command)
        if len(w) < 2 or w[0] != "python" or not re.match(r"(benchmarks|scripts)/\w+\.py$", w[1]):
            continue
        assert (REPO / w[1]).is_file(), f"{page}: {w[1]} does not exist"
        accepted = help_text(sys.executable, str(REPO / w[1]))
        bad += [f"{page}: {f} not in {w[1]} --help: {command}" for f in flags(w[2:])
                if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", accepted)]
    assert not bad, "\n".join(bad)


def test_every_guidance_override_names_a_field():
    fields = guidance_fields()
    bad = [f"{page}: system.guidance.{name}" for page in PAGES for name in GUIDANCE_FIELD.findall(page.read_text())
           if name not in fields]
    assert not bad, bad


def field_table_names(page: Path):
    """Backticked names in the first column of ``page``'s tables whose header's first cell is ``field``."""
    names, in_table = [], False
    for line in page.read_text().splitlines():
        if line.startswith("| field |"):
            in_table = True
        elif in_table and line.startswith("|"):
            names += re.findall(r"`(\w+)`", line.split("|")[1])
        else:
            in_table = False
    return names


@pytest.mark.parametrize("page", ["README.md", "docs/guidance.md"])
def test_every_field_in_the_field_tables_exists(page):
    names = field_table_names(REPO / page)
    assert len(names) >= 8
    assert not set(names) - guidance_fields(), set(names) - guidance_fields()


def test_the_guidance_reference_lists_every_field():
    listed = set(field_table_names(REPO / "docs" / "guidance.md"))
    assert guidance_fields() - listed == set(), "fields missing from docs/guidance.md"


def launch_sh_subcommands():
    """The labels of ``launch.sh``'s dispatcher (its ``case "${1:-}" in ... esac``)."""
    text = (REPO / "launch.sh").read_text()
    block = re.search(r'^case "\$\{1:-\}" in\n(.*?)^esac', text, flags=re.S | re.M)
    assert block, "no dispatcher in launch.sh"
    labels = re.findall(r"^\s*([\w|-]+)\)", block.group(1), flags=re.M)
    return {name for label in labels for name in label.split("|")}


def test_the_subcommands_checked_are_launch_shs_own():
    assert LAUNCH_SUBCOMMANDS == launch_sh_subcommands()


def prose_spans(page: Path):
    """The inline code spans of ``page`` outside its fenced blocks."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return re.findall(r"`([^`\n]+)`", text)


def quality_tasks():
    """The task names ``benchmarks/quality.py --help`` lists (argparse wraps them at hyphens)."""
    text = help_text(sys.executable, str(REPO / "benchmarks" / "quality.py"))
    listed = re.search(r"comma-separated subset of\s+(.*?)(?:\n\s*--|\Z)", text, flags=re.S)
    assert listed, text
    return set("".join(listed.group(1).split()).split(","))


def test_every_flag_named_in_the_prose_is_accepted():
    """A flag in the README's text (`--cpu`, `--smoke N`, `--smoke-tiny`, `--gpu 0,1`, `--quick`, ...) is one the
    launcher accepts or one of a script the README names; the commands in its text are checked as the blocks'
    are; every `--tasks` value is a task of the quality benchmark."""
    readme = REPO / "README.md"
    spans = prose_spans(readme)
    script = re.compile(r"(benchmarks|scripts)/\w+\.py$")  # threestudio's own `python launch.py` is not ours
    scripts = sorted({w[1] for w in [words(c) for _, c in commands()] + [s.split() for s in spans]
                      if len(w) > 1 and w[0] == "python" and script.match(w[1])})
    accepted = {"launch.sh": help_text(sys.executable, "-m", "dreamsampler_launcher.run_threestudio")}
    accepted.update({s: help_text(sys.executable, str(REPO / s)) for s in scripts})
    named = [w[0] for s in spans if s.startswith("--") for w in [s.split()]]
    named += [f for s in spans for w in [s.split()] if s.startswith("bash launch.sh") or w[1:2] and script.match(w[1])
              for f in flags(w)]
    assert {"--cpu", "--smoke", "--smoke-tiny"} <= set(named), named
    bad = [f for f in named if not any(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", h) for h in accepted.values())]
    assert not bad, f"flags in README.md's text no command accepts: {bad}"
    tasks = [t for s in spans + [c for _, c in commands()] for v in re.findall(r"--tasks[ =]([\w,-]+)", s) for t in v.split(",")]
    assert tasks and not set(tasks) - quality_tasks(), set(tasks) - quality_tasks()


def guidance_defaults():
    """``{field: default}`` of ``DreamSamplerGuidance.Config`` for the literal defaults, read from the source."""
    tree = ast.parse(GUIDANCE.read_text())
    config = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Config")
    out = {}
    for s in config.body:
        if isinstance(s, ast.AnnAssign) and s.value is not None:
            try:
                out[s.target.id] = ast.literal_eval(s.value)
            except ValueError:  # a default_factory: no literal to compare
                pass
    return out


@pytest.mark.parametrize("page", ["README.md", "docs/guidance.md"])
def test_the_defaults_in_the_field_tables_are_the_codes(page):
    """The second column of a field table (`value`, or `a, b` for a row naming two fields) is the Config's default."""
    defaults, checked, in_table = guidance_defaults(), 0, False
    for line in (REPO / page).read_text().splitlines():
        if line.startswith("| field |"):
            in_table = True
            continue
        if not (in_table and line.startswith("|")):
            in_table = False
            continue
        cells = line.split("|")
        names, values = re.findall(r"`(\w+)`", cells[1]), [v.strip().strip("`") for v in cells[2].split(",")]
        if len(names) != len(values) or not names:
            continue
        for name, value in zip(names, values):
            if name not in defaults or value in ("", "-", "---"):
                continue
            want = defaults[name]
            got = {"true": True, "false": False, "none": None, "null": None}.get(value.lower(), value)
            if isinstance(want, (int, float)) and not isinstance(want, bool) and isinstance(got, str):
                got = float(got.replace(",", ""))
            assert got == want, f"{page}: {name} is documented as {value!r}, the code's default is {want!r}"
            checked += 1
    assert checked >= 6, checked


@pytest.mark.parametrize("page", ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))])
def test_every_relative_link_resolves(page):
    """Markdown links and images to files of this repository (not URLs) name files that exist."""
    path = REPO / page
    targets = re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", path.read_text(), flags=re.S))
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    missing = [t for t in local if t and not (path.parent / t).exists()]
    assert not missing, f"{page} links to files that do not exist: {missing}"
