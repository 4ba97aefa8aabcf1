"""The GPU check, run by ``scripts/device_check.sh`` (which installs the carried wheels and sets PYTHONPATH
first): what has never run here runs on CUDA within a time budget, and one JSON summary says what ran.

Stages, each recorded in the summary as it ends (a run stopped at its time limit keeps what was done):

1. ``environment``: Python, torch, the GPU, nvcc, and for each package threestudio needs whether it is
   installed, carried, a stand-in (``tinycudann``, ``nvdiffrast``: the CPU back end's, on CUDA tensors) or
   a stub (``wandb``, ``IPython``); then threestudio imported with the extension loaded.
2. ``nerfacc`` (with the configs): nerfacc's CUDA kernels built (its JIT build, for this GPU's architecture
   only), in the background while stage 3 runs. When they do not build in time the configs run nerfacc's
   ops through the CPU back end's PyTorch paths on CUDA tensors (``DREAMSAMPLER_NERFACC_TORCH=1``); the
   summary says which ran.
3. ``benchmark``: ``benchmarks/guidance_step.py`` on CUDA with float16 weights against threestudio's own
   guidance (``stable-diffusion-guidance``; ``deep-floyd-guidance`` for IF): ms per step and peak
   ``torch.cuda.max_memory_allocated`` (growth per step and whole), on the tiny SD pipeline at SD 1.5's 512 px,
   on the miniature world model and on the tiny IF pipeline.
4. ``configs``: every ``configs/*.yaml`` for ``--steps`` steps (a few dozen) with ``--smoke-tiny`` (the tiny
   pipeline) and ``--smoke`` (the miniature world model), through ``launch.sh``'s runner
   (``dreamsampler_launcher.run_threestudio``) on CUDA at each config's own precision (16-mixed for the NeRF
   configs); then ``configs/variants/*.yaml`` on the tiny pipeline while time is left. Per run: exit code,
   seconds, the trainer's precision and weights, whether every logged ``train/*`` value is finite, the first and
   last logged losses and timesteps, and the log's tail when it failed.

``--cpu`` runs the same stages on the CPU, without the CUDA-only parts (no nerfacc build; the benchmark and
the configs on the CPU, few steps): a dry run showing the check starts and goes through end to end.

    bash scripts/device_check.sh [--cpu] [--steps N] [--jobs J] [--budget SECONDS] [--only STAGE ...]
                                 [--configs NAME ...] [--nerfacc build|torch]

The summary: ``$OUT/device_check.json`` when ``OUT`` is set, else ``outputs/device_check/device_check.json``;
the runs' logs beside it as ``device_check_logs.tar.gz``. Exit status 1 when a stage that ran failed.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import glob
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("environment", "benchmark", "configs")  # nerfacc's build goes with the configs
VARIANT_OVERRIDES = {  # what a variant's tiny-pipeline run needs beyond its smoke settings (recorded per run)
    # the tiny tokenizer reads characters (77): the SVG prompt with the default artifact descriptors is 79
    "svg-deblur-bridge": ["system.guidance.source_suffix=', blurry'"],
}
PACKAGES = ("torch", "pytorch_lightning", "transformers", "huggingface_hub", "diffusers", "omegaconf", "kornia",
            "nerfacc", "tinycudann", "nvdiffrast", "igl", "trimesh", "controlnet_aux", "envlight", "typeguard",
            "wandb", "IPython", "threestudio")

ENV_PROBE = r"""
import importlib, importlib.metadata as md, json, shutil, subprocess, sys
out = {"python": sys.version.split()[0], "packages": {}}
for name in sys.argv[1].split(","):
    try:
        m = importlib.import_module(name)
    except Exception as e:
        out["packages"][name] = {"state": "missing", "error": f"{type(e).__name__}: {e}"[:300]}
        continue
    if getattr(m, "STAND_IN", False):
        state = "stand-in (the CPU back end's PyTorch version)"
    elif getattr(m, "STUB", False):
        state = "stub"
    else:
        state = "installed"
    try:
        dist = {"IPython": "ipython", "igl": "libigl", "pytorch_lightning": "pytorch-lightning"}.get(name, name)
        version = md.version(dist)
    except Exception:
        version = getattr(m, "__version__", None)
    origin = getattr(m, "__file__", None) or ""
    out["packages"][name] = {"state": state, "version": version, "from": origin}
import torch
out["torch_cuda"] = torch.version.cuda
out["cuda_available"] = torch.cuda.is_available()
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "capability": f"{p.major}.{p.minor}",
                  "multiprocessors": p.multi_processor_count}
nvcc = shutil.which("nvcc")
out["nvcc"] = nvcc and subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.splitlines()[-1]
print(json.dumps(out))
"""

IMPORT_PROBE = r"""
import sys, time
t0 = time.time()
from dreamsampler_launcher import run_threestudio
threestudio = run_threestudio.load_threestudio(cpu=sys.argv[1] == "cpu")
names = [n for n in ("dreamsampler-guidance", "dreamsampler-text-to-nerf-system", "dreamsampler-degraded-nerf-system",
                     "dreamsampler-image-system", "dreamsampler-svg-system")]
for n in names:
    threestudio.find(n)
print(f"threestudio {getattr(threestudio, '__version__', '?')} from {run_threestudio.threestudio_root()} with the "
      f"extension ({len(names)} registered names found) in {time.time() - t0:.1f} s")
"""

NERFACC_BUILD = r"""
import sys, time
t0 = time.time()
from nerfacc.cuda import _backend
sys.exit(0 if _backend._C is not None else 3)
"""


class Check:
    def __init__(self, args):
        self.args = args
        self.start = time.time()
        self.out_dir = Path(args.out or os.environ.get("OUT") or REPO / "outputs" / "device_check")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work)
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.python = sys.executable
        self.env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                        OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
        self.summary = {
            "mode": "cpu dry run (CUDA-only parts skipped)" if args.cpu else "cuda",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "host": platform.node(),
            "budget_s": args.budget,
            "install": self._read_json(self.work / "install.json"),
        }
        self.nerfacc_proc = None

    # --------------------------------------------------------------- helpers
    @staticmethod
    def _read_json(path):
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None

    def left(self) -> float:
        return self.args.budget - (time.time() - self.start) if self.args.budget else math.inf

    def save(self) -> Path:
        self.summary["seconds"] = round(time.time() - self.start, 1)
        path = self.out_dir / "device_check.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.summary, indent=2, default=str))
        os.replace(tmp, path)
        return path

    def run(self, cmd, log_name, timeout, env=None, cwd=REPO):
        """(exit code or 'timeout', seconds, log path) of ``cmd``, its output in ``logs/<log_name>.log``."""
        log = self.logs / f"{log_name}.log"
        t0 = time.time()
        with open(log, "w") as f:
            try:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env or self.env, cwd=cwd,
                                    timeout=max(timeout, 1)).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        return rc, round(time.time() - t0, 1), log

    @staticmethod
    def tail(log: Path, n: int = 40) -> str:
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # ---------------------------------------------------------------- stages
    def environment(self):
        rc, seconds, log = self.run([self.python, "-c", ENV_PROBE, ",".join(PACKAGES)], "environment", 300)
        env = {"rc": rc, "seconds": seconds}
        if rc == 0:
            env.update(json.loads(log.read_text().strip().splitlines()[-1]))
        else:
            env["log_tail"] = self.tail(log)
        rc, seconds, log = self.run([self.python, "-c", IMPORT_PROBE, "cpu" if self.args.cpu else "gpu"],
                                    "import-threestudio", 300)
        env["threestudio_import"] = {"rc": rc, "seconds": seconds, "log_tail": self.tail(log, 3 if rc == 0 else 40)}
        self.summary["environment"] = env
        if not self.args.cpu and not env.get("cuda_available"):
            self.summary["error"] = "no CUDA device: rerun with --cpu for the dry run"

    def start_nerfacc_build(self):
        if self.args.cpu:
            self.summary["nerfacc"] = {"kernels": "not built (--cpu)",
                                       "configs_used": "the CPU back end's PyTorch paths (CPU tensors)"}
            return
        if self.args.nerfacc == "torch":
            self.env["DREAMSAMPLER_NERFACC_TORCH"] = "1"
            self.summary["nerfacc"] = {"kernels": "not built (--nerfacc torch)",
                                       "configs_used": "the CPU back end's PyTorch paths on CUDA tensors"}
            return
        gpu = (self.summary.get("environment") or {}).get("gpu") or {}
        self.env["TORCH_EXTENSIONS_DIR"] = str(self.work / "torch_extensions")
        if gpu.get("capability"):
            self.env.setdefault("TORCH_CUDA_ARCH_LIST", gpu["capability"])
        self.env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
        log = open(self.logs / "nerfacc-build.log", "w")
        self.nerfacc_t0 = time.time()
        self.nerfacc_proc = subprocess.Popen([self.python, "-c", NERFACC_BUILD], stdout=log, stderr=subprocess.STDOUT,
                                             env=self.env, cwd=REPO)

    def finish_nerfacc_build(self):
        if self.nerfacc_proc is None:
            return
        timeout = min(self.args.nerfacc_timeout - (time.time() - self.nerfacc_t0), max(self.left() - 120, 0))
        try:
            rc = self.nerfacc_proc.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            self.nerfacc_proc.kill()
            self.nerfacc_proc.wait()
            rc = "timeout"
        seconds = round(time.time() - self.nerfacc_t0, 1)
        built = rc == 0
        info = {"rc": rc, "seconds": seconds, "arch": self.env.get("TORCH_CUDA_ARCH_LIST"),
                "kernels": "built" if built else "did not build",
                "configs_used": "nerfacc's CUDA kernels" if built
                else "the CPU back end's PyTorch paths on CUDA tensors (DREAMSAMPLER_NERFACC_TORCH=1)"}
        if not built:
            info["log_tail"] = self.tail(self.logs / "nerfacc-build.log")
            self.env["DREAMSAMPLER_NERFACC_TORCH"] = "1"
            shutil.rmtree(self.work / "torch_extensions", ignore_errors=True)  # no half-built extension is loaded
        self.summary["nerfacc"] = info

    def benchmark(self):
        mini_sd = REPO / "custom" / "threestudio-dreamsampler" / "dreamsampler" / "world" / "mini-sd"
        cases = [("sd", None, 64), ("sd", str(mini_sd), 64), ("if", None, 64)]
        steps, warmup = (1, 1) if self.args.cpu else (self.args.bench_steps, 2)
        if self.args.cpu:
            cases = cases[:1]
        results = []
        for family, model, size in cases:
            name = f"benchmark-{family}-{'mini-sd' if model else 'tiny'}"
            if self.left() < 200:
                results.append({"case": name, "skipped": "time budget"})
                continue
            out = self.work / f"{name}.json"
            cmd = [self.python, str(REPO / "benchmarks" / "guidance_step.py"), "--family", family, "--size", str(size),
                   "--steps", str(steps), "--warmup", str(warmup), "--json", str(out)]
            if model:
                cmd += ["--model", model]
            rc, seconds, log = self.run(cmd, name, min(self.left() - 150, 600))
            row = {"case": name, "rc": rc, "seconds": seconds}
            if rc == 0 and out.exists():
                row.update(self._read_json(out))
            else:
                row["log_tail"] = self.tail(log)
            results.append(row)
            self.summary["benchmark"] = results
            self.save()
        self.summary["benchmark"] = results

    def config_runs(self):
        tiny = "--smoke-tiny"
        runs = [(c, flag) for flag in (tiny, "--smoke") for c in sorted(glob.glob(str(REPO / "configs" / "*.yaml")))]
        runs += [(c, tiny) for c in sorted(glob.glob(str(REPO / "configs" / "variants" / "*.yaml")))]
        if self.args.configs:
            runs = [(c, f) for c, f in runs if any(k in Path(c).name for k in self.args.configs)]
        results = {}
        per_run = 900 if self.args.cpu else 300
        lmc = self.corrective() if any("lmc" in Path(c).name for c, _ in runs) else None

        def one(config, flag):
            name = f"{'tiny' if flag == tiny else 'mini-sd'}-{Path(config).parent.name}-{Path(config).stem}"
            if self.left() < 60:
                return name, {"config": os.path.relpath(config, REPO), "model": flag, "skipped": "time budget"}
            exp_root = self.work / "runs" / name
            extra = [o for key, overrides in VARIANT_OVERRIDES.items() if key in Path(config).stem for o in overrides]
            if "lmc" in Path(config).stem and lmc:
                extra.append(f"system.guidance.lmc_checkpoint={lmc}")
            cmd = [self.python, "-m", "dreamsampler_launcher.run_threestudio", "--config", config, "--train",
                   flag, str(self.args.steps), f"exp_root_dir={exp_root}", *extra]
            cmd += ["--cpu"] if self.args.cpu else []
            rc, seconds, log = self.run(cmd, name, min(per_run, self.left() - 20))
            row = {"config": os.path.relpath(config, REPO), "model": "tiny pipeline" if flag == tiny else "mini-sd",
                   "steps": self.args.steps, **({"overrides": extra} if extra else {}), "rc": rc, "seconds": seconds,
                   **self.read_trial(exp_root)}
            if rc != 0 or not row.get("finite", False):
                row["log_tail"] = self.tail(log)
            return name, row

        with concurrent.futures.ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            futures = [pool.submit(one, c, f) for c, f in runs]
            for future in concurrent.futures.as_completed(futures):
                name, row = future.result()
                results[name] = row
                self.summary["configs"] = dict(sorted(results.items()))
                self.save()
        ran = [r for r in results.values() if "rc" in r]
        passed = sum(r["rc"] == 0 and r.get("finite", False) for r in ran)
        self.summary["configs_passed"] = f"{passed} of {len(ran)} ran ({len(results) - len(ran)} skipped for time)"

    def corrective(self):
        """An untrained LMC corrective for the tiny pipeline's 4-channel latents (the -lmc variants need a
        checkpoint; the check runs their code path, not a trained k_psi); None when it cannot be made."""
        path = self.work / "lmc-corrective.safetensors"
        code = ("import sys, torch; from dreamsampler.distill.lmc import CorrectiveUNet, save_corrective; "
                "torch.manual_seed(0); "
                "save_corrective(CorrectiveUNet(in_channels=4, base_channels=8, depth=2), sys.argv[1])")
        rc, _, _ = self.run([self.python, "-c", code, str(path)], "lmc-corrective", 300)
        return path if rc == 0 and path.exists() else None

    @staticmethod
    def read_trial(exp_root: Path) -> dict:
        """What the run's trial folder says: precision and weights, its logged train/* values."""
        trials = sorted(exp_root.glob("*/*/configs/parsed.yaml"))
        if not trials:
            return {"trial": None}
        trial = trials[0].parents[1]
        out = {"trial": str(trial)}
        try:
            from omegaconf import OmegaConf

            cfg = OmegaConf.load(trials[0])
            system = cfg.system
            half = system.get("guidance", {}).get("half_precision_weights", system.get("half_precision_weights"))
            out["config_precision"] = str(cfg.trainer.get("precision"))  # the launcher runs a CPU run in 32-true
            out["half_precision_weights"] = "true (the default)" if half is None else half
        except Exception as exc:  # the summary says so instead of failing the check
            out["config_error"] = f"{type(exc).__name__}: {exc}"
        metrics = trial / "csv_logs" / "version_0" / "metrics.csv"
        if not metrics.exists():
            return out
        with open(metrics) as f:
            rows = list(csv.DictReader(f))
        series = {}
        for r in rows:
            for k, v in r.items():
                if k.startswith("train/") and v not in (None, ""):
                    series.setdefault(k, []).append(float(v))
        out["finite"] = bool(series) and all(math.isfinite(v) for vs in series.values() for v in vs)
        out["logged"] = {k: {"n": len(v), "first": v[0], "last": v[-1]} for k, v in sorted(series.items())
                         if k.startswith(("train/loss", "train/timestep", "train/grad_norm", "train/carried_rms"))}
        save = trial / "save"
        out["saved_files"] = len([p for p in save.rglob("*") if p.is_file()]) if save.exists() else 0
        return out

    def finish(self):
        self.summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        path = self.save()
        with tarfile.open(self.out_dir / "device_check_logs.tar.gz", "w:gz") as tar:
            tar.add(self.logs, arcname="logs")
        return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU: the CUDA-only parts skipped")
    ap.add_argument("--steps", type=int, default=None, help="steps per config run (default 24; 2 with --cpu)")
    ap.add_argument("--bench-steps", type=int, default=5, help="timed steps of each benchmark case")
    ap.add_argument("--jobs", type=int, default=None, help="config runs at a time (default 4; 1 with --cpu)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole check; later runs are skipped when it is spent "
                    "(default 500; 0 with --cpu: none)")
    ap.add_argument("--nerfacc-timeout", type=float, default=300, help="seconds for nerfacc's CUDA build")
    ap.add_argument("--nerfacc", choices=("build", "torch"), default="build",
                    help="torch: skip the build, nerfacc's ops through the CPU back end's PyTorch paths")
    ap.add_argument("--only", nargs="*", choices=STAGES, default=list(STAGES), help="stages to run")
    ap.add_argument("--configs", nargs="*", default=None, help="only configs whose file name contains one of these")
    ap.add_argument("--work", default=None, help="scratch folder (device_check.sh passes its own)")
    ap.add_argument("--out", default=None, help="summary folder (default $OUT, else outputs/device_check)")
    args = ap.parse_args(argv)
    args.steps = args.steps or (2 if args.cpu else 24)
    args.jobs = args.jobs or (1 if args.cpu else 4)
    args.budget = (0 if args.cpu else 500) if args.budget is None else args.budget
    args.work = args.work or str(REPO / "outputs" / "device_check" / "work")
    check = Check(args)
    try:
        if "environment" in args.only:
            check.environment()
            check.save()
        if "configs" in args.only:
            check.start_nerfacc_build()
        if "benchmark" in args.only:
            check.benchmark()
            check.save()
        if "configs" in args.only:
            check.finish_nerfacc_build()
            check.save()
            check.config_runs()
    finally:
        path = check.finish()
    print(f"[device_check] summary: {path}")
    summary = check.summary
    brief = {k: summary.get(k) for k in ("mode", "seconds", "nerfacc", "configs_passed")}
    print(json.dumps(brief, indent=2, default=str))
    failed = [(summary.get("environment") or {}).get("threestudio_import", {}).get("rc", 0) != 0,
              any(b.get("rc", 0) != 0 for b in summary.get("benchmark") or []),
              any(r.get("rc", 0) != 0 or ("rc" in r and not r.get("finite"))
                  for r in (summary.get("configs") or {}).values())]
    sys.exit(1 if any(failed) else 0)


if __name__ == "__main__":
    main()
