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
