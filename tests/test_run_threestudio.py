"""The launcher's argument handling (no threestudio needed): the command line, config paths, where outputs land."""
import os

import pytest

from dreamsampler_launcher import run_threestudio


def write_config(tmp_path, exp_root_dir):
    path = tmp_path / "c.yaml"
    path.write_text(f"name: x\nexp_root_dir: {exp_root_dir}\n")
    return str(path)


def test_relative_outputs_are_anchored_where_the_user_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = run_threestudio.run_config(write_config(tmp_path, "outputs"), [])
    assert run_threestudio.outputs_here(cfg, []) == [f"exp_root_dir={tmp_path / 'outputs'}"]


@pytest.mark.parametrize("extra", [["exp_root_dir=mine"], []])
def test_explicit_or_absolute_outputs_are_left_alone(tmp_path, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)
    exp = "outputs" if extra else str(tmp_path / "abs")
    cfg = run_threestudio.run_config(write_config(tmp_path, exp), extra)
    assert run_threestudio.outputs_here(cfg, extra) == []


def test_the_command_line_is_parsed_once(tmp_path, monkeypatch):
    config = write_config(tmp_path, "o")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(run_threestudio.CPU_ENV, raising=False)
    args = run_threestudio.LaunchArgs.parse(["--test", "--config=" + config, "--gpu", "0,1", "--cpu", "--smoke", "5",
                                             "--verbose", "system.prompt=a red sphere", "x=1"])
    assert (args.mode, args.config, args.gpu, args.cpu, args.smoke, args.smoke_steps) == ("--test", config, "0,1", True, "world", 5)
    assert args.flags == ["--verbose"] and args.overrides == ["system.prompt=a red sphere", "x=1"]
    assert args.n_processes() == 2
    assert args.launch_argv() == ["--config", config, "--test", "--gpu", "0,1", "--verbose", "system.prompt=a red sphere", "x=1"]
    assert run_threestudio.LaunchArgs.parse(["--config", config, "--smoke-tiny", "2"]).smoke == "tiny"


@pytest.mark.parametrize("argv,message", [
    (["--config", "nope.yaml"], "--config nope.yaml: no such file"),
    (["--train"], "the following arguments are required: --config"),
    (["--config", "{c}", "--smoke", "0"], "--smoke: takes a number of steps >= 1"),
    (["--config", "{c}", "--smoke", "2", "--smoke-tiny", "2"], "not allowed with argument"),
    (["--config", "{c}", "--train", "--test"], "not allowed with argument"),
    (["--config", "{c}", "--cpus"], "unrecognized argument(s) --cpus"),
    (["--config", "{c}", "a-word"], "unrecognized argument(s) a-word"),
])
def test_a_bad_command_line_is_one_line(tmp_path, argv, message):
    c = write_config(tmp_path, "o")
    with pytest.raises(SystemExit) as err:
        run_threestudio.LaunchArgs.parse([a.format(c=c) for a in argv])
    assert message in str(err.value) and str(err.value).startswith("[run_threestudio]") and "\n" not in str(err.value)


def test_an_override_that_does_not_fit_names_itself(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("system:\n  operator: [{type: blur}]\n")
    with pytest.raises(SystemExit, match=r"system.operator=\{type: noise\}: does not apply .* system.operator is a list"):
        run_threestudio.run_config(str(config), ["x=1", "system.operator={type: noise}"])


# ------------------------------------------------------- user paths, the schedule
def anchored(tmp_path, monkeypatch, config_text, overrides, root=None):
    from dreamsampler_launcher.paths import anchor_paths

    config = tmp_path / "run.yaml"
    config.write_text(config_text)
    user = tmp_path / "user"
    user.mkdir(exist_ok=True)
    monkeypatch.chdir(user)
    cfg = run_threestudio.run_config(str(config), overrides)
    return anchor_paths(cfg, os.getcwd(), str(root or tmp_path / "threestudio")), user


def test_relative_user_paths_are_taken_from_the_working_directory(tmp_path, monkeypatch):
    import json

    text = "system:\n  image: skimage:chelsea\n  regions: []\n  pretrained_model_name_or_path: org/model\n"
    (tmp_path / "user" / "masks").mkdir(parents=True)
    for name in ("cat.png", "masks/left.png", "run.ckpt"):
        (tmp_path / "user" / name).write_bytes(b"x")
    (tmp_path / "user" / "mini-sd").mkdir()
    out, user = anchored(tmp_path, monkeypatch, text, [
        "system.image=cat.png", 'system.regions=[{prompt: "a dog", mask: masks/left.png}, {prompt: "b", rect: [0, 0, 1, 1]}]',
        "system.pretrained_model_name_or_path=mini-sd", "resume=run.ckpt",
    ])
    assert f"system.image={user / 'cat.png'}" in out
    assert f"system.pretrained_model_name_or_path={user / 'mini-sd'}" in out
    assert f"resume={user / 'run.ckpt'}" in out
    (regions,) = [o for o in out if o.startswith("system.regions=")]
    assert json.loads(regions.split("=", 1)[1])[0] == {"prompt": "a dog", "mask": str(user / "masks" / "left.png")}


def test_built_in_names_model_ids_and_threestudio_assets_are_left_alone(tmp_path, monkeypatch):
    (tmp_path / "threestudio" / "load").mkdir(parents=True)
    (tmp_path / "threestudio" / "load" / "a.png").write_bytes(b"x")
    text = "system:\n  image: skimage:chelsea\n  target: shapes\n  pretrained_model_name_or_path: org/model\n" \
           "data:\n  dataroot: procedural\n  image: load/a.png\n  gt_root: null\n"
    out, _ = anchored(tmp_path, monkeypatch, text, [])
    assert out == []


def test_a_missing_relative_path_names_the_field_and_the_paths_tried(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match=r"data.dataroot='views': no such file or folder; tried .*user/views"):
        anchored(tmp_path, monkeypatch, "data:\n  dataroot: ???\n", ["data.dataroot=views"])


@pytest.mark.parametrize("guidance,field,expected", [
    ("dreamsampler-guidance", "", ["system.guidance.trainer_max_steps=${trainer.max_steps}"]),
    ("dreamsampler-guidance", "    trainer_max_steps: 50\n", []),
    ("stable-diffusion-guidance", "", []),
])
def test_the_schedule_follows_the_run_unless_set(tmp_path, guidance, field, expected):
    config = tmp_path / "c.yaml"
    config.write_text(f"system:\n  guidance_type: {guidance}\n  guidance:\n    guidance_scale: 7.5\n{field}trainer:\n  max_steps: 30\n")
    follows = lambda overrides: run_threestudio.swap_overrides(run_threestudio.run_config(str(config), overrides))
    assert follows([]) == expected
    override = follows([f"system.guidance_type={guidance}"])
    assert override == expected


def test_an_empty_field_the_tag_is_made_from_is_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text('tag: "${rmspace:${data.caption},_}"\ndata:\n  caption: ""\n')
    from dreamsampler_launcher.check_config import check_tag_fields

    with pytest.raises(SystemExit, match="data.caption is empty"):
        check_tag_fields(run_threestudio.run_config(str(config), ["data.caption=null"]))
    check_tag_fields(run_threestudio.run_config(str(config), ["data.caption=a cube"]))


def test_known_third_party_warnings_are_silenced_and_ours_are_not():
    import warnings

    from dreamsampler_launcher import quiet

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.silence_known_warnings()
        for message, category, module in [
            ("`torch.cuda.amp.autocast(args...)` is deprecated", FutureWarning, "threestudio.models.guidance.sd"),
            ("register_new_resolver() is deprecated", UserWarning, "threestudio.utils.config"),
            ("ours", UserWarning, "dreamsampler.diffusion.sampler"),
            ("ours, deprecated", FutureWarning, "threestudio-dreamsampler.guidance.dreamsampler_guidance"),
        ]:
            warnings.warn_explicit(message, category, "f.py", 1, module=module)
    assert [str(w.message) for w in caught] == ["ours", "ours, deprecated"]


def test_resume_files_are_checked_without_unpickling(tmp_path):
    import torch

    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.randn(1000)}, "global_step": 3}, good)
    run_threestudio.check_resume(["--train", f"resume={good}"])
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    random = tmp_path / "random.ckpt"
    random.write_bytes(os.urandom(4096))
    for bad in (truncated, random):
        with pytest.raises(SystemExit, match="not a checkpoint") as err:
            run_threestudio.check_resume(["--train", f"resume={bad}"])
        assert "weights_only" not in str(err.value)
    with pytest.raises(SystemExit, match="no such file"):
        run_threestudio.check_resume([f"resume={tmp_path / 'missing.ckpt'}"])


def test_a_swap_into_sdi_yaml_weighs_loss_sds_by_its_lambda_sdi(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("system:\n  guidance_type: stable-diffusion-sdi-guidance\n  guidance:\n    trainer_max_steps: 5\n"
                      "  loss:\n    lambda_sdi: 2.\n")
    swap = lambda o: run_threestudio.swap_overrides(run_threestudio.run_config(str(config), o))
    assert swap([]) == []
    assert swap(["system.guidance_type=dreamsampler-guidance"]) == ["system.loss.lambda_sds=${system.loss.lambda_sdi}"]
    assert swap(["system.guidance_type=dreamsampler-guidance", "system.loss.lambda_sds=1"]) == []
