"""The repository's layout rules: no sys.path manipulation, a core that imports nothing from threestudio
and installs as a package, and each shared formula defined in one place."""
import ast
import os
import subprocess
import sys
from pathlib import Path

from .conftest import EXT, REPO

CORE = EXT / "dreamsampler"
FORMULAS = {  # name -> the one core module that defines it
    "forward_noise": "diffusion/process.py",
    "tweedie": "diffusion/process.py",
    "cfg": "diffusion/process.py",
    "carried_noise": "diffusion/process.py",
    "ddim_sigma": "diffusion/process.py",
    "sds_gradient": "distill/modes.py",
    "region_weights": "image/regions.py",
    "psnr": "metrics.py",
    "masked_psnr": "metrics.py",
    "bchw": "image_io.py",
    "bhwc": "image_io.py",
    "to_uint8": "image_io.py",
}


def tracked(*suffixes):
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    return [REPO / f for f in out if f.endswith(suffixes) and (REPO / f).is_file()]


def definitions(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_nothing_manipulates_sys_path():
    offenders = []
    for path in tracked(".py", ".sh"):
        if path == Path(__file__):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "sys.path.insert" in line or "sys.path.append" in line or "sys.path[" in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}")
    assert not offenders, f"sys.path manipulation: {offenders}"


def test_the_core_imports_nothing_from_threestudio():
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "threestudio" for n in names), f"{path} imports threestudio"


def test_the_core_and_the_launcher_are_installed_packages(tmp_path):
    """Importable from any directory, without the repository on the path, from the checkout's files."""
    probe = "import dreamsampler, dreamsampler.diffusion, dreamsampler_launcher; print(dreamsampler.__file__); print(dreamsampler_launcher.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    core, launcher = out.stdout.split()
    assert Path(core).resolve() == (CORE / "__init__.py").resolve()
    assert Path(launcher).resolve() == (REPO / "launcher" / "__init__.py").resolve()


def test_each_shared_formula_is_defined_once():
    where = {name: [] for name in FORMULAS}
    for path in tracked(".py"):
        for name in definitions(path) & set(FORMULAS):
            where[name].append(path)
    for name, home in FORMULAS.items():
        assert where[name] == [CORE / home], f"{name} defined in {[str(p.relative_to(REPO)) for p in where[name]]}"
