"""A user's mistakes, each answered before any model is loaded: one line naming the field the user set, within
seconds, and no trial folder left behind (``launcher/check_config.py``, run by ``run_threestudio.main``).

The table is (config, command-line arguments, a piece of text the message must contain). Each case runs the
launcher's ``main`` in this process (threestudio imported once for all) and stops at the message.
"""
import time

import pytest

from dreamsampler_launcher import run_threestudio

from ..conftest import threestudio_root
from .runner import REPO

pytestmark = pytest.mark.threestudio

T2N, DEG = "dreamsampler-text-to-nerf", "dreamsampler-degraded-nerf"
EDIT, INPAINT, RESTORE, T2I, SVG = "dreamsampler-edit", "dreamsampler-inpaint", "dreamsampler-restore", "dreamsampler-text-to-image", "dreamsampler-svg-deblur"
DROPIN = "dreamfusion-sd"  # threestudio's own config
TINY, WORLD = ["--smoke-tiny", "2"], ["--smoke", "2"]
SECONDS = 60  # the bound on the time to the message (threestudio's import included for the first case)

BAD = [
    # the guidance's fields
    (T2N, TINY + ["system.guidance.guidence_scale=3"], "did you mean 'guidance_scale'"),
    (T2N, TINY + ["system.guidance.mode=sdss"], "system.guidance.mode='sdss' is unknown"),
    (T2N, TINY + ["system.guidance.min_step_percent=0.9", "system.guidance.max_step_percent=0.1"], "system.guidance.min_step_percent"),
    (T2N, TINY + ["system.guidance.eta=2"], "system.guidance.eta must lie in [0, 1]"),
    (T2N, TINY + ["system.guidance.timestep_schedule=exp"], "system.guidance.timestep_schedule='exp'"),
    (T2N, TINY + ["system.guidance.weighting_strategy=foo"], "system.guidance.weighting_strategy='foo'"),
    (T2N, TINY + ["system.guidance.carry=both"], "system.guidance.carry='both'"),
    (T2N, TINY + ["system.guidance.on_nonfinite=ignore"], "system.guidance.on_nonfinite='ignore'"),
    (T2N, TINY + ["system.guidance.steps_per_timestep=0"], "system.guidance.steps_per_timestep"),
    (T2N, TINY + ["system.guidance.camera_bins=-1"], "system.guidance.camera_bins=-1"),
    (T2N, TINY + ["system.guidance.camera_bins=4", "system.guidance.per_view_noise=true"], "system.guidance.camera_bins=4"),
    (T2N, TINY + ["system.guidance.schedule_start_step=-1"], "system.guidance.schedule_start_step must be >= 0"),
    (T2N, TINY + ["system.guidance.trainer_max_steps=0"], "system.guidance.trainer_max_steps"),
    (T2N, TINY + ["system.guidance.mode=lmc"], "system.guidance.lmc_checkpoint"),
    (T2N, TINY + ["system.guidance.mode=dds"], "system.guidance.source_prompt"),
    (T2N, TINY + ["system.guidance.guidance_scale=abc"], "system.guidance.guidance_scale"),
    # types, other components, top-level keys
    (T2N, TINY + ["system.guidance_type=dreamsampler-guidence"], "system.guidance_type='dreamsampler-guidence' is not a registered"),
    (T2N, TINY + ["system_type=dreamsampler-text-to-nerf-sistem"], "did you mean 'dreamsampler-text-to-nerf-system'"),
    (T2N, TINY + ["data_type=random-camera-datamodul"], "did you mean 'random-camera-datamodule'"),
    (T2N, TINY + ["data.widht=32"], "did you mean 'width'"),
    (T2N, TINY + ["system.geometry.radious=2"], "did you mean 'radius'"),
    (T2N, TINY + ["system.material.ambient_only_step=3"], "did you mean 'ambient_only_steps'"),
    (T2N, TINY + ["system.renderer.num_samples_per_ray=many"], "system.renderer.num_samples_per_ray"),
    (T2N, TINY + ["seeed=1"], "seeed: not a top-level key of a threestudio config; did you mean 'seed'"),
    (DROPIN, TINY + ["system.guidance_type=dreamsampler-guidance", "system.guidance.pixel_loss=true"], "system.loss has no lambda_pixel"),
    # model folders, outputs, resume, prompts
    (T2N, TINY + ["system.guidance.pretrained_model_name_or_path=/nonexistent/model"], "system.guidance.pretrained_model_name_or_path='/nonexistent/model': no such model folder"),
    (T2N, TINY + ["system.prompt_processor.pretrained_model_name_or_path=./models/x"], "system.prompt_processor.pretrained_model_name_or_path='./models/x': no such model folder"),
    (T2N, TINY + ["exp_root_dir=/proc/no-outputs-here"], "exp_root_dir='/proc/no-outputs-here': cannot write"),
    (T2N, TINY + ["resume=/nonexistent/last.ckpt"], "resume=/nonexistent/last.ckpt: no such file"),
    (T2N, WORLD + ["system.prompt_processor.prompt=a hamburger"], "does not know 'hamburger'"),
    (T2N, ["--smoke", "x"], "--smoke: takes a number of steps"),
    (T2N, ["--trian"], "unrecognized argument(s) --trian"),
    # degraded views
    (DEG, WORLD + ["system.warmup_steps=-5"], "system.warmup_steps must be >= 0"),
    (DEG, WORLD + ["data.operator={type: downsample, factor: 0}"], "data.operator={'type': 'downsample', 'factor': 0} is invalid"),
    (DEG, WORLD + ["data.operator={type: noise, sigma: -0.1}"], "data.operator={'type': 'noise', 'sigma': -0.1} is invalid"),
    (DEG, WORLD + ["data.operator={type: blurr}"], "data.operator={'type': 'blurr'} is invalid"),
    (DEG, WORLD + ["data.dataroot=world:abc"], "data.dataroot='world:abc': a world scene is world:<index>"),
    (DEG, WORLD + ["data.dataroot=no_such_views"], "data.dataroot='no_such_views': no such file or folder"),
    (DEG, WORLD + ["data.caption=null"], "data.caption is empty"),
    (DEG, ["data.dataroot=world:5", "data.caption=a red sphere"], "data.operator has no value"),
    # 2D and SVG
    (EDIT, WORLD + ["system.task=edti"], "system.task='edti' is unknown"),
    (EDIT, WORLD + ["system.image=missing.png"], "system.image='missing.png': no such file or folder"),
    (EDIT, WORLD + ["system.pretrained_model_name_or_path=/nonexistent/sd"], "system.pretrained_model_name_or_path='/nonexistent/sd': no such model folder"),
    (RESTORE, WORLD + ["system.operator=[{type: blur, kernel_size: -1, sigma: 1.0}]"], "system.operator=[{'type': 'blur', 'kernel_size': -1"),
    (RESTORE, WORLD + ["system.operator={type: blur}"], "system.operator={type: blur}: does not apply to"),
    (INPAINT, WORLD + ['system.regions=[{prompt: "", rect: [0, 0, 1, 1]}]'], "system.regions[0].prompt is empty"),
    (T2I, WORLD + ["system.prompt="], "system.prompt"),
    (T2I, WORLD + ["system.init=foo"], "system.init='foo' is unknown"),
    (SVG, WORLD + ["system.operator={type: bicubic}"], "system.operator="),
    (SVG, WORLD + ["system.num_path=3"], "did you mean 'num_paths'"),
]


def run_main(tmp_path, config, args):
    out = tmp_path / "outputs"
    folder = threestudio_root() / "configs" if config == DROPIN else REPO / "configs"
    argv = ["--config", str(folder / f"{config}.yaml"), "--train", "--cpu", *args]
    if not any(a.startswith("exp_root_dir=") for a in args):
        argv.append(f"exp_root_dir={out}")
    start = time.perf_counter()
    with pytest.raises(SystemExit) as err:
        run_threestudio.main(argv)
    return str(err.value), time.perf_counter() - start, out


@pytest.mark.parametrize("config,args,expected", BAD, ids=[f"{c.replace('dreamsampler-', '')}:{' '.join(a[2:] if a[0].startswith('--smoke') else a)}" for c, a, _ in BAD])
def test_a_bad_input_is_one_early_line_naming_the_field(tmp_path, monkeypatch, ts, config, args, expected):
    monkeypatch.chdir(tmp_path)
    message, seconds, out = run_main(tmp_path, config, args)
    assert expected in message, message
    assert message.startswith("[run_threestudio]") and "\n" not in message and "Traceback" not in message
    assert seconds < SECONDS
    assert not out.exists() or not any(p.is_dir() for p in out.rglob("*")), "a trial folder was left behind"


def checked(tmp_path, config, args):
    """The overrides the launcher hands launch.py for ``args`` (the run itself is not started)."""
    parsed = run_threestudio.LaunchArgs.parse(
        ["--config", str(REPO / "configs" / f"{config}.yaml"), "--train", "--cpu", *args, f"exp_root_dir={tmp_path / 'o'}"])
    return run_threestudio.prepare(parsed).overrides


def test_a_whole_operator_override_replaces_the_smoke_blur(tmp_path, monkeypatch, ts):
    monkeypatch.chdir(tmp_path)
    overrides = checked(tmp_path, DEG, WORLD + ["data.operator={type: downsample, factor: 4}"])
    assert not [o for o in overrides if o.startswith("data.operator.")]
    assert "data.operator={type: downsample, factor: 4}" in overrides


def test_a_negative_cfg_and_a_long_prompt_are_warned_and_the_trial_folder_shortened(tmp_path, monkeypatch, ts, capsys):
    monkeypatch.chdir(tmp_path)
    prompt = " ".join(["a red sphere and a blue cube"] * 20)  # 140 words: over the 32 tokens of the mini model and over 255 bytes as a tag
    overrides = checked(tmp_path, T2N, WORLD + ["system.guidance.guidance_scale=-5", f"system.prompt_processor.prompt={prompt}"])
    err = capsys.readouterr().err
    assert "system.guidance.guidance_scale=-5 is negative" in err
    assert "longer than the text encoder's context of 32" in err  # the mini model's CLIP
    (tag,) = [o for o in overrides if o.startswith("tag=")]
    assert len(tag) - len("tag=") <= 96 + 9 and tag.startswith("tag=a_red_sphere_and")
