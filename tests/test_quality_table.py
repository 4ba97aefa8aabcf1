"""benchmarks/quality.py's table pieces (no runs): summaries, the Markdown table of rows with different
columns, the NeRF curves read from validation metrics, the methods as data (ids, run folder names, overrides)."""
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("quality", Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py")
quality = sys.modules["quality"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(quality)


def test_summaries_average_scenes_and_turn_booleans_into_accuracies():
    rows = [{"method": "a", "scene": 0, "unet_evals": 2, "psnr": 20.0, "colour_ok": True},
            {"method": "a", "scene": 1, "unet_evals": 2, "psnr": 30.0, "colour_ok": False},
            {"method": "degraded input", "scene": 0, "unet_evals": 0, "psnr": 10.0}]
    summary = {r["method"]: r for r in quality.summarize(rows)}
    # standard errors by hand: sample std of (20, 30) is 5 sqrt(2), over sqrt(2) scenes 5; of (1, 0): 0.5
    assert summary["a"] == {"method": "a", "scenes": 2, "unet_evals": 2.0, "psnr": 25.0, "psnr_se": 5.0,
                            "colour_ok": 0.5, "colour_ok_se": 0.5}
    assert "psnr_se" not in summary["degraded input"]  # one scene: no spread to estimate
    md = quality.markdown({"task": quality.summarize(rows)})
    assert "| method | scenes | unet_evals | psnr | psnr_se | colour_ok | colour_ok_se |" in md
    assert "| a | 2 | 2.00 | 25.00 | 5.00 | 0.500 | 0.500 |" in md and "| degraded input | 1 | 0.00 | 10.00 |  |  |  |" in md


def test_rows_ids_are_kept_in_the_summary_and_left_out_of_the_table():
    rows = [{"method": "dreamsampler (shipped)", "id": "dreamsampler", "scene": s, "unet_evals": 2, "psnr": 20.0 + s}
            for s in (0, 1)]
    summary = quality.summarize(rows)
    assert summary == [{"method": "dreamsampler (shipped)", "id": "dreamsampler", "scenes": 2, "unet_evals": 2.0, "psnr": 20.5,
                        "psnr_se": 0.5}]
    md = quality.markdown({"task": summary})
    assert "| method | scenes | unet_evals | psnr |" in md and "| dreamsampler (shipped) | 2 | 2.00 | 20.50 |" in md


def test_nerf_curve_reads_each_validation_in_step_order(tmp_path):
    for step, value in ((150, 21.0), (100, 20.0), (200, 22.0)):
        (tmp_path / f"it{step}-val").mkdir()
        (tmp_path / f"it{step}-val" / "metrics.json").write_text(json.dumps({"step": step, "renders": {"psnr": value, "ssim": 0.5}}))
    curve = quality.nerf.nerf_curve(tmp_path, warmup=100, unet_per_step=2)
    assert [(p["step"], p["unet_evals"], p["psnr"]) for p in curve] == [(100, 0, 20.0), (150, 100, 21.0), (200, 200, 22.0)]


@pytest.mark.parametrize("name, folder", [("sds as eq. 18's prior", "sds-as-eq-18s-prior"),
                                          ("dreamsampler (eq. 18-19, shipped)", "dreamsampler-eq-18-19-shipped")])
def test_run_folders_are_named_by_method(name, folder):
    assert quality.common.slug(name) == folder


def test_every_task_s_run_folders_are_those_of_the_cached_runs():
    """runs/<task>/<folder>/<scene>: the label's slug, as before the methods were data, unless a method names its
    folder (the older folders of restoration, editing and text-to-image); so the runs of earlier benchmarks in
    --out are found."""
    slug = quality.common.slug
    for name, task in quality.TASKS.items():
        for m in task.methods:
            assert m.run_folder == (m.folder or slug(m.label))
            assert m.where(name, "0-1") == f"{m.runs_of or name}/{m.run_folder}/0-1"
            if name.startswith(("inpaint", "nerf", "svg", "text-to-nerf")):
                assert not m.folder and m.run_folder == slug(m.label), (name, m)

    def folders(name):
        return {m.run_folder for m in quality.TASKS[name].methods if m.config or name == "text-to-image"}

    assert folders("text-to-nerf-peers") == {"dreamsampler-shipped-config", "dreamsampler-one-line-swap-into-dreamfusion-sd-yaml",
                                             "sds-dreamfusion-sd-yaml", "sdi-sdi-yaml"}
    # text-to-nerf-swaps reads the peers' runs of its four rows that the peers task has (the peers' methods as they are)
    swaps = quality.TASKS["text-to-nerf-swaps"].methods
    shared = [m for m in swaps if m.runs_of]
    assert {m.runs_of for m in shared} == {"text-to-nerf-peers"} and {m.run_folder for m in shared} == folders("text-to-nerf-peers")
    peers = {m.id: m for m in quality.TASKS["text-to-nerf-peers"].methods}
    assert all((m.config, m.overrides, m.run_folder) == (peers[m.id].config, peers[m.id].overrides, peers[m.id].run_folder)
               for m in shared)
    # text-to-nerf-swaps-heldout reads the held-out task's runs of the rows that task has, likewise
    heldout = {m.id: m for m in quality.TASKS["text-to-nerf-peers-long-heldout"].methods}
    shared = [m for m in quality.TASKS["text-to-nerf-swaps-heldout"].methods if m.runs_of]
    assert {m.runs_of for m in shared} == {"text-to-nerf-peers-long-heldout"} and {m.id for m in shared} == {
        "dreamsampler-swap", "sds", "sdi"}
    assert all((m.config, m.overrides, m.run_folder) == (heldout[m.id].config, heldout[m.id].overrides,
                                                         heldout[m.id].run_folder) for m in shared)
    assert not any(m.runs_of for name, task in quality.TASKS.items()
                   if name not in ("text-to-nerf-swaps", "text-to-nerf-swaps-heldout") for m in task.methods)
    assert folders("restore-blur") == folders("restore-x4") == {"dreamsampler", "dps-only", "init-noise"}
    assert folders("edit") == {"dreamsampler", "localized"}
    assert folders("text-to-image") == {"ddim", "sds-latent", "lmc-latent", "sds-latent-lmc-cfg", "bridge-latent"}
    assert folders("nerf-blur") == folders("nerf-x4") == folders("nerf-x8") == folders("nerf-inconsistent") == {
        slug(label) for label in ("warm-up alone", "data consistency only",
                                  "dreamsampler (settings by rule, start raised by the warm-up's residual)",
                                  "dreamsampler (consistent one-step targets, settings by rule)",
                                  "dreamsampler (consistent targets remade 4 times, settings by rule)")}
    rule = {m.id: m for m in quality.nerf.NERF_METHODS}  # the fixed-start row (not run by default): the residual rule off
    assert "system.start_from_residual=false" in rule["dreamsampler-rule-fixed-start"].overrides
    assert not any("start_from_residual" in o for o in rule["dreamsampler-rule"].overrides)
    # the consistent-targets rows: the rule's settings, data views only, once or remade 4 times
    for key, rounds in (("dreamsampler-targets", []), ("dreamsampler-targets-4", ["system.target_rounds=4"])):
        assert rule[key].overrides == ("{rule}", "system.prior=consistent-targets", *rounds, "data.novel_view_prob=0")


def test_method_ids_are_short_keys_unique_in_each_task():
    import re

    for name, task in quality.TASKS.items():
        ids = [m.id for m in task.methods]
        assert len(ids) == len(set(ids)), (name, ids)
        assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids), (name, ids)
        labels = [m.label for m in task.methods]
        assert len(labels) == len(set(labels)) and "degraded-input" not in ids, name
    assert [m.id for m in quality.TASKS["text-to-nerf-heldout"].methods] == ["dreamsampler", "dreamsampler-guided", "sds"]
    assert [m.id for m in quality.TASKS["text-to-nerf-long"].methods] == ["dreamsampler", "sds"]


def test_the_held_out_long_peers_task_runs_the_long_peers_methods_on_other_seeds(tmp_path):
    """text-to-nerf-peers-long-heldout: the methods, prompts and steps of text-to-nerf-peers-long, seeds from 3 on
    (the long task runs 0-2), as many as --seeds says, with two rows at the linear schedule beside them: the swap, and
    the swap plus the shipped config's background learning rate (text-to-nerf-swaps's row); its own run folders."""
    long, heldout = quality.TASKS["text-to-nerf-peers-long"], quality.TASKS["text-to-nerf-peers-long-heldout"]
    swaps = {m.id: m for m in quality.TASKS["text-to-nerf-swaps"].methods}
    linear, background = heldout.methods[len(long.methods):]
    assert heldout.methods[: len(long.methods)] == long.methods and linear == quality.TASKS["text-to-nerf-schedules"].methods[0]
    schedule = "system.guidance.timestep_schedule=linear"  # the default when these two rows ran
    assert background.overrides == swaps["swap-background-lr"].overrides + (schedule,) and schedule in linear.overrides
    assert "system.optimizer.params.background.lr=0.01" in swaps["swap-background-lr"].overrides
    assert not any(m.runs_of for m in heldout.methods)
    s = quality.Settings(out=tmp_path, scenes=1, nfe=10, quick=False)
    assert "3 seeds (seeds 0-2)" in long.about(s) and "3 seeds (seeds 3-5)" in heldout.about(s)
    one = quality.Settings(out=tmp_path, scenes=1, nfe=10, quick=False, t2n_seeds=1)
    text = heldout.about(one)
    assert "x 1 seed (seed 3): 4 runs per method, 1000 steps each" in text and "no default was chosen" in text
    assert all(p in text for p in quality.text_to_nerf.T2N_PEER_PROMPTS)


def test_the_schedules_task_adds_only_the_sqrt_schedule_to_the_swap_on_unused_seeds(tmp_path):
    """text-to-nerf-schedules: the swap with timestep_schedule=linear and with sqrt (one override each) and SDS, as in
    text-to-nerf-peers-long (prompts, steps, settings), on seeds 6-7 (the other long tasks run 0-5); its own runs."""
    long, task = quality.TASKS["text-to-nerf-peers-long"], quality.TASKS["text-to-nerf-schedules"]
    peers = {m.id: m for m in long.methods}
    assert [m.id for m in task.methods] == ["swap-linear", "swap-sqrt", "sds"]
    swap, (linear, sqrt, sds) = peers["dreamsampler-swap"], task.methods
    assert sds == peers["sds"] and linear.config == sqrt.config == swap.config
    for m, schedule in ((linear, "linear"), (sqrt, "sqrt")):  # the one-line swap plus the schedule, named
        assert set(m.overrides) - set(swap.overrides) == {f"system.guidance.timestep_schedule={schedule}"}
        assert set(swap.overrides) <= set(m.overrides)
    text = task.about(quality.Settings(out=tmp_path, scenes=1, nfe=10, quick=False))
    assert "x 2 seeds (seeds 6-7): 8 runs per method, 1000 steps each" in text
    assert "final one of sds (dreamfusion-sd.yaml)" in text


def test_the_held_out_swaps_task_runs_the_swap_rows_of_the_other_configs_on_the_held_out_seeds(tmp_path):
    """text-to-nerf-swaps-heldout: text-to-nerf-swaps's rows for the swap and each config's own guidance in
    dreamfusion-sd.yaml, sdi.yaml and magic3d-coarse-sd.yaml (none of the "swap + ..." rows), at the held-out task's
    steps, prompts and seeds (3-5); only the swap in sdi.yaml and the magic3d-coarse-sd.yaml rows are its own runs."""
    swaps = {m.id: m for m in quality.TASKS["text-to-nerf-swaps"].methods}
    heldout, task = quality.TASKS["text-to-nerf-peers-long-heldout"], quality.TASKS["text-to-nerf-swaps-heldout"]
    ids = ["dreamsampler-swap", "sds", "dreamsampler-swap-sdi", "sdi", "dreamsampler-swap-magic3d", "sds-magic3d"]
    assert [m.id for m in task.methods] == ids
    for m in task.methods:  # the swaps task's rows as they are, but where the runs are read from
        assert (m.config, m.overrides, m.label) == (swaps[m.id].config, swaps[m.id].overrides, swaps[m.id].label)
    own = [m.id for m in task.methods if not m.runs_of]
    assert own == ["dreamsampler-swap-sdi", "dreamsampler-swap-magic3d", "sds-magic3d"]
    assert all("timestep_schedule" not in o for m in task.methods for o in m.overrides)  # the guidance's defaults
    s = quality.Settings(out=tmp_path, scenes=1, nfe=10, quick=False)
    text, held = task.about(s), heldout.about(s)
    assert "x 3 seeds (seeds 3-5): 12 runs per method, 1000 steps each" in text and text.split("\n")[0] == held.split("\n")[0]
    assert "final one of sdi (sdi.yaml)" in text and text.count("(the runs of `text-to-nerf-peers-long-heldout`)") == 3


def test_method_overrides_are_templates_filled_lazily():
    Method = quality.common.Method
    m = Method("x", "x (a label)", "dreamsampler-edit", ("system.prompt={prompt!r}", "system.regions=[{{rect: {rect}}}]", "a=1"))
    assert m.args(prompt="a red circle", rect=[0, 0.5], unused=lambda: pytest.fail("called")) == [
        "system.prompt='a red circle'", "system.regions=[{rect: [0, 0.5]}]", "a=1"]
    assert Method("y", "y", overrides=("k={k_psi}",)).args(k_psi=lambda: "/k.safetensors") == ["k=/k.safetensors"]
    calls = []
    several = Method("z", "z", overrides=("a=1", "{rule}", "b={n}"))  # one field alone, a list: its overrides
    assert several.args(rule=lambda: calls.append(1) or ["c=2", "d=3"], n=4) == ["a=1", "c=2", "d=3", "b=4"]
    assert calls == [1] and Method("w", "w", overrides=("{n}",)).args(n=5) == ["5"]
    assert quality.common.pick((m, Method("y", "y")), ["y", "x"])[1] is m


def test_the_worlds_own_spread_of_icon_position_and_size():
    spread = quality.text_to_image.world_spread(200)
    assert set(spread) == {"x", "y", "size"} and 0.1 < spread["x"] < 0.35 and 0 < spread["size"] < 0.1


def test_render_panels_and_object_saturation(tmp_path):
    """A saved rgb | normal | opacity grid is cut into its panels at the world's 64 px; saturation is read
    on the opaque pixels of a render and on the non-white pixels of a world image."""
    import imageio.v3 as iio
    import numpy as np
    import torch

    rgb = np.full((32, 32, 3), 255, np.uint8)
    rgb[8:24, 8:24] = (255, 0, 0)  # a saturated red square on white
    opacity = np.zeros((32, 32, 3), np.uint8)
    opacity[8:24, 8:24] = 255
    iio.imwrite(tmp_path / "0.png", np.concatenate([rgb, np.zeros_like(rgb), opacity], 1))
    views, alpha = quality.text_to_nerf.render_views([tmp_path / "0.png"]), quality.text_to_nerf.render_views([tmp_path / "0.png"], 2)
    assert views.shape == alpha.shape == (1, 3, 64, 64)
    assert torch.allclose(views[0, :, 32, 32], torch.tensor([1.0, 0.0, 0.0]))
    assert quality.text_to_nerf.saturation(views, alpha) == pytest.approx(1.0, abs=0.05)  # edges blend with white at 64 px
    half = views * 0.5 + 0.5  # a pink square: saturation 0.5, the white background left out either way
    assert quality.text_to_nerf.saturation(half, alpha) == pytest.approx(0.5, abs=0.02)
    assert quality.text_to_nerf.saturation(half) == pytest.approx(0.5, abs=0.1)  # the blended edge pixels count here


def test_failure_modes_flag_a_wall_and_nothing_but_no_world_object():
    """A frame-filling opacity is flooded, an empty one (or a dot) empty, a square of a quarter of the frame
    neither; no held-out world object (its non-white pixels as the opacity) is either, largest and smallest
    included, so the thresholds sit outside the world's objects."""
    import torch

    from dreamsampler.world import world_image

    t2n = quality.text_to_nerf
    modes = lambda opacity: t2n.failure_modes(t2n.object_mask(None, opacity))
    wall, nothing, square, dot = torch.ones(2, 3, 64, 64), torch.zeros(2, 3, 64, 64), torch.zeros(2, 3, 64, 64), torch.zeros(2, 3, 64, 64)
    square[..., 16:48, 16:48] = 1
    dot[0, :, 30:32, 30:32] = 1
    assert modes(wall) == {"flooded": 1.0, "empty": 0.0}
    assert modes(nothing) == modes(dot) == {"flooded": 0.0, "empty": 1.0}
    assert modes(square) == {"flooded": 0.0, "empty": 0.0}
    covers = []
    for k in range(100):
        mask = t2n.object_mask(world_image("eval", 900_000 + k, "object")[0][None])  # as saturation reads the world
        covers.append(float(mask.float().mean()))
        assert t2n.failure_modes(mask) == {"flooded": 0.0, "empty": 0.0}, k
    assert t2n.WORLD_COVER[0] <= min(covers) and max(covers) <= t2n.WORLD_COVER[1]  # the range the pages state
    assert t2n.EMPTY_COVER < min(covers) and max(covers) < t2n.FLOODED_COVER


def test_text_to_nerf_methods_share_settings_and_train_k_psi_only_for_lmc(monkeypatch, tmp_path):
    """The guided row is the shipped config with Alg. 2's carry, the azimuth-quarter row that plus camera_bins=4,
    the bridge row the -bridge variant with the null source prompt; picking methods without LMC never trains
    its corrective."""
    t2n = quality.text_to_nerf
    monkeypatch.setattr(t2n, "mini_corrective", lambda s: pytest.fail("k_psi trained for a run without LMC"))
    s = quality.Settings(out=tmp_path, scenes=1, nfe=10, quick=True)
    ids = ["dreamsampler", "dreamsampler-guided", "dreamsampler-guided-bins", "bridge"]
    m = t2n.method_overrides(s, quality.common.pick(t2n.T2N_METHODS, ids))
    assert [x.id for x in m] == ids
    (config, shipped), (config_g, guided), (config_q, quarter), (config_b, bridge) = ((x.config, o) for x, o in m.items())
    assert config == config_g == config_q == "dreamsampler-text-to-nerf"
    assert guided == shipped + ["system.guidance.carry=guided"] and quarter == guided + ["system.guidance.camera_bins=4"]
    assert config_b == "variants/text-to-nerf-bridge" and bridge == shipped + ["system.guidance.source_prompt=''"]
    t2n.text_to_nerf("text-to-nerf", ids=ids)  # a task of those methods is made without k_psi
    with pytest.raises(pytest.fail.Exception, match="k_psi"):
        t2n.method_overrides(s, t2n.T2N_METHODS)


def test_peer_methods_differ_from_the_shipped_config_only_where_they_say(tmp_path):
    """text-to-nerf-peers: every method at the shared CFG; the swap and SDS rows in threestudio's dreamfusion-sd.yaml
    differ only by the guidance mode, the SDI row is the swap into threestudio's sdi.yaml in mode sdi."""
    t2n = quality.text_to_nerf
    s = quality.Settings(out=tmp_path, scenes=1, nfe=10, quick=True)
    m = t2n.method_overrides(s, t2n.T2N_PEER_METHODS)
    assert [x.id for x in m] == ["dreamsampler", "dreamsampler-swap", "sds", "sdi"]
    cfg = f"system.guidance.guidance_scale={t2n.T2N_CFG}"
    assert all(cfg in overrides for overrides in m.values())
    (c0, shipped), (c1, swap), (c2, sds), (c3, sdi) = ((x.config, o) for x, o in m.items())
    assert (c0, c1, c2, c3) == ("dreamsampler-text-to-nerf", "threestudio:dreamfusion-sd", "threestudio:dreamfusion-sd", "threestudio:sdi")
    assert set(sds) - set(swap) == {"system.guidance.mode=sds"} and set(sdi) - set(swap) == {"system.guidance.mode=sdi"}
    assert not set(t2n.T2N_PEER_PROMPTS) & set(t2n.T2N_PROMPTS)


def test_swap_methods_add_one_difference_of_the_shipped_config_each(tmp_path):
    """text-to-nerf-swaps: the swap into dreamfusion-sd.yaml plus one of the shipped config's differences from it per
    row (background lr, weighting, pixel term with its weight, system class); the swap and SDS in sdi.yaml's and
    magic3d-coarse-sd.yaml's peers as in dreamfusion-sd.yaml; one seed, the peers' prompts, every row at CFG 7.5."""
    t2n = quality.text_to_nerf
    task = quality.TASKS["text-to-nerf-swaps"]
    s = quality.Settings(out=tmp_path, scenes=1, nfe=10, quick=True)
    m = {x.id: (x.config, o) for x, o in t2n.method_overrides(s, task.methods).items()}
    assert list(m) == ["dreamsampler", "dreamsampler-swap", "swap-background-lr", "swap-tweedie", "swap-pixel", "swap-system",
                       "sds", "dreamsampler-swap-sdi", "sdi", "dreamsampler-swap-magic3d", "sds-magic3d"]
    cfg, swap_line = f"system.guidance.guidance_scale={t2n.T2N_CFG}", "system.guidance_type=dreamsampler-guidance"
    assert all(cfg in o for _, o in m.values()) and all(swap_line in o for k, (_, o) in m.items() if k != "dreamsampler")
    config, swap = m["dreamsampler-swap"]
    assert config == "threestudio:dreamfusion-sd" and set(swap) == {swap_line, cfg}
    added = {k: (c, [x for x in o if x not in swap]) for k, (c, o) in m.items() if k.startswith("swap-")}
    assert added == {
        "swap-background-lr": (config, ["system.optimizer.params.background.lr=0.01"]),
        "swap-tweedie": (config, ["system.guidance.weighting_strategy=tweedie"]),
        "swap-pixel": (config, ["system.guidance.pixel_loss=true", "system.loss.lambda_pixel=3932"]),
        "swap-system": (config, ["system_type=dreamsampler-text-to-nerf-system", "system.seed=${seed}"]),
    }
    assert m["dreamsampler-swap-sdi"] == ("threestudio:sdi", swap) and m["sdi"] == ("threestudio:sdi", m["sdi"][1])
    assert set(m["sdi"][1]) - set(swap) == {"system.guidance.mode=sdi"}
    assert m["dreamsampler-swap-magic3d"] == ("threestudio:magic3d-coarse-sd", swap)
    c, sds_magic3d = m["sds-magic3d"]
    assert c == "threestudio:magic3d-coarse-sd" and sds_magic3d == m["sds"][1]
    assert set(sds_magic3d) - set(swap) == {"system.guidance.mode=sds"}
    assert t2n.SWAP_PROMPTS == t2n.T2N_PEER_PROMPTS
    about = quality.about(task, s)  # what its results page says it ran
    assert "x 1 seed (seed 0): 4 runs per method, 200 steps" in about
    assert all(f"(`{i}`)" in about for i in m) and about.count("(the runs of `text-to-nerf-peers`)") == 4
    assert "`system.guidance_type=dreamsampler-guidance system.guidance.guidance_scale=7.5 system.guidance.pixel_loss=true " \
           "system.loss.lambda_pixel=3932`" in about


def test_figure_titles_wrap_long_config_names_after_hyphens():
    lines = quality.results.title_lines
    assert lines("sds (magic3d-coarse-sd.yaml)") == ["sds (magic3d-", "coarse-", "sd.yaml)"]
    assert lines("dreamsampler (shipped config)") == ["dreamsampler", "(shipped", "config)"]
    assert lines("sdi (sdi.yaml)") == ["sdi (sdi.yaml)"] and lines("a-b") == ["a-b"]


def test_curves_of_more_methods_than_default_colours_get_a_colour_each(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: drawn.append(k.get("color")) or plot(self, *a, **k))
    curves = {f"m{i}": [[{"evals": 10 ** (1 + i % 3), "read": i / 11}]] for i in range(11)}
    quality.results.save_curves(tmp_path / "c.png", curves, x="evals", panels=[("read", "read")], xlabel="e", logx=True)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert len({tuple(c) for c in drawn}) == 11


def test_unet_evaluations_are_summed_from_the_runs_log(tmp_path):
    log = tmp_path / "trial" / "csv_logs" / "version_0"
    log.mkdir(parents=True)
    (log / "metrics.csv").write_text("step,train/unet_evals,train/loss_sds\n0,24.0,1\n1,22.0,1\n1,,\n2,20.0,1\n")
    (tmp_path / "trial" / "save").mkdir()
    assert quality.text_to_nerf.logged_unet_evals(tmp_path / "trial" / "save") == {1: 24, 2: 46, 3: 66}


def fake_task(s):
    """Two methods on two scenes, a one-cell figure and a curves figure, as a task returns them."""
    import torch

    (s.out / "fake-curves.png").write_bytes(b"curves")
    rows = [{"method": "dreamsampler", "scene": i, "unet_evals": 200, "psnr": 30.0 + i, "colour_ok": True} for i in (0, 1)]
    rows += [{"method": "degraded input", "scene": 0, "unet_evals": 0, "psnr": 20.0}]
    return rows, [[torch.zeros(1, 3, 64, 64)]], ["input"]


def test_results_page_states_table_figures_command_commit_date_machine_and_time(tmp_path, monkeypatch):
    """A task run writes docs/results/<task>.md (here into --results) with its summarized rows, its figures
    copied next to it, and how, where and when it was measured; --quick writes no page unless asked."""
    monkeypatch.setattr(quality, "TASKS", {"fake": fake_task})
    monkeypatch.setattr(quality.common, "Reader", lambda: None)
    results = tmp_path / "results"
    argv = ["--tasks", "fake", "--out", str(tmp_path / "out"), "--results", str(results)]
    quality.main(argv)
    page = (results / "fake.md").read_text()
    assert page.startswith("# fake\n")
    assert "| method | scenes | unet_evals | psnr | psnr_se | colour_ok | colour_ok_se |" in page
    assert "| dreamsampler | 2 | 200.00 | 30.50 | 0.50 | 1.000 | 0.000 |" in page
    assert "| degraded input | 1 | 0.00 | 20.00 |  |  |  |" in page
    assert "![fake: fake.png](fake.png)" in page and "![fake: fake-curves.png](fake-curves.png)" in page
    assert (results / "fake.png").read_bytes()[:4] == b"\x89PNG" and (results / "fake-curves.png").read_bytes() == b"curves"
    provenance = page.split("| | |\n|---|---|\n", 1)[1].strip().splitlines()
    fields = dict(line.strip("| ").split(" | ", 1) for line in provenance)
    assert fields["command"] == "`python benchmarks/quality.py " + " ".join(argv) + "`"
    commit = fields["commit"].strip("`")
    assert commit == quality.git_commit() and commit.split()[0].isalnum() and len(commit.split()[0]) >= 7
    assert fields["date"][:2] == "20" and fields["date"].endswith("UTC")
    assert fields["cpu"] == quality.results.cpu_model() and fields["cores"].isdigit() and fields["gpu"]
    assert fields["torch"] == quality.torch.__version__
    assert fields["wall time"].endswith("s (this task, this invocation)")
    assert fields["runs"] == "0 run folders: 0 computed by this invocation, 0 read from `--out`'s cache"
    assert page.split("\n")[3] == "" and page.split("\n")[4].startswith("| method |")  # a task without about: none
    monkeypatch.setattr(quality, "TASKS", {"fake": quality.common.Task((), fake_task, lambda s: f"{s.scenes} scenes, one seed")})
    quality.main(argv)
    page = (results / "fake.md").read_text()
    assert page.split("\n")[4:6] == ["5 scenes, one seed", ""] and page.split("\n")[6].startswith("| method |")
    quality.main(["--quick", "--tasks", "fake", "--out", str(tmp_path / "quick")])  # no --results: no page
    assert not (quality.REPO / "docs" / "results" / "fake.md").exists()


def test_results_page_counts_runs_by_the_commit_that_computed_them(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.json").write_text(json.dumps({"commit": "abc1234", "seconds": 3}))
    (tmp_path / "b").mkdir()
    records = quality.run_records([tmp_path / "a", tmp_path / "b", tmp_path / "a"])
    assert records["commits"] == {"abc1234": 1, "unrecorded": 1} and records["seconds"] == 3  # "a" counted once


def test_the_command_names_paths_inside_the_checkout_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "TASKS", {"fake": fake_task})
    monkeypatch.setattr(quality.common, "Reader", lambda: None)
    out = quality.REPO / "outputs" / "test-results-page"
    try:
        quality.main(["--tasks", "fake", "--out", str(out), "--results", str(tmp_path)])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert "| command | `python benchmarks/quality.py --tasks fake --out outputs/test-results-page --results " in (
        tmp_path / "fake.md").read_text()


def test_evals_to_reach_is_the_first_validation_at_the_references_final_mean_read():
    """Two runs per method; by hand: the reference ends at mean 0.75; method a's means are 0.25, 0.75 (at 300 evals),
    b's never pass 0.5."""
    reach = quality.text_to_nerf.evals_to_reach
    point = lambda evals, read: {"unet_evals": evals, "colour_ok": read}
    curves = {"ref": [[point(1000, 0.0), point(2000, 1.0)], [point(1000, 0.5), point(2000, 0.5)]],
              "a": [[point(100, 0.5), point(300, 1.0)], [point(100, 0.0), point(300, 0.5)]],
              "b": [[point(100, 0.5), point(300, 0.5)], [point(100, 0.5), point(300, 0.5)]]}
    got = reach(curves, "ref")
    assert got["ref"] == 2000 and got["a"] == 300 and math.isnan(got["b"])


def test_run_all_computes_runs_side_by_side_in_the_given_order(tmp_path, monkeypatch):
    """--jobs 2: two runs at a time, started in the task's order (an interrupted benchmark has the first ones), a
    failed run raises; with one job the task computes each run as it reads it (run_all starts none)."""
    import threading
    import time

    lock, started, running, most = threading.Lock(), [], [0], [0]

    def fake_run(s, where, **kw):
        with lock:
            started.append(where)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        if where == "boom":
            raise RuntimeError("boom failed")

    monkeypatch.setattr(quality.common, "run", fake_run)
    runs = [{"config": "c", "where": f"t/m/{k}", "overrides": []} for k in range(5)]
    quality.common.run_all(quality.Settings(out=tmp_path, scenes=1, nfe=1, quick=True), runs)
    assert started == []
    quality.common.run_all(quality.Settings(out=tmp_path, scenes=1, nfe=1, quick=True, jobs=2), runs)
    assert started[:2] == ["t/m/0", "t/m/1"] and sorted(started) == [r["where"] for r in runs] and most[0] == 2
    with pytest.raises(RuntimeError, match="boom failed"):
        quality.common.run_all(quality.Settings(out=tmp_path, scenes=1, nfe=1, quick=True, jobs=2),
                               [{"where": "boom"}, {"where": "fine"}])


def test_a_cached_run_is_used_only_for_the_steps_it_was_computed_with(tmp_path):
    """--nerf-steps with an --out that holds runs of other lengths: refused, naming the folder; runs cached before
    run.json recorded steps are read as they are."""
    root = tmp_path / "runs" / "t" / "m"
    (root / "exp" / "trial" / "save").mkdir(parents=True)
    (root / "exp" / "trial" / "save" / "metrics.json").write_text("{}")
    s = quality.Settings(out=tmp_path, scenes=1, nfe=1, quick=True)
    assert quality.common.run(s, "c", "t/m", [], steps=200) == root / "exp" / "trial" / "save"  # no run.json
    (root / "run.json").write_text(json.dumps({"commit": "abc1234", "seconds": 3, "steps": 600}))
    assert quality.common.run(s, "c", "t/m", [], steps=600) == root / "exp" / "trial" / "save"
    with pytest.raises(RuntimeError, match=r"cached in .*t/m has 600 steps, not 200: give another --out"):
        quality.common.run(s, "c", "t/m", [], steps=200)
