"""Every system on every model family it serves, in real threestudio on the CPU: a v-predicting
(SD 2.x-shaped) pipeline is read as v by every system, never silently as epsilon; the text-to-NeRF config
runs on the IF-shaped pipeline; a system that cannot use a pixel-space model says so, naming the field."""
import pytest

from ..conftest import REPO
from .runner import RunFailed, assert_finite_losses, assert_sane_image, run_config

pytestmark = pytest.mark.threestudio

STEPS = 2
CONFIGS = REPO / "configs"


@pytest.mark.parametrize(
    "config, read_by",
    [
        ("dreamsampler-text-to-nerf.yaml", "latent, v_prediction prediction, 512 px"),  # the guidance's load line
        ("dreamsampler-degraded-nerf.yaml", "latent, v_prediction prediction, 512 px"),
        ("dreamsampler-svg-deblur.yaml", "latent, v_prediction prediction, 512 px"),
        ("dreamsampler-edit.yaml", "system.pretrained_model_name_or_path: v_prediction prediction"),  # the 2D system's
    ],
)
def test_every_system_reads_a_v_prediction_model_as_v(config, read_by, tiny_sd_v, tmp_path):
    run = run_config(CONFIGS / config, tmp_path, tiny_sd_v, STEPS)
    assert read_by in run.log
    assert "epsilon prediction" not in run.log


def test_the_text_to_nerf_config_runs_on_deep_floyd_if(tiny_sd, tiny_if, tmp_path):
    run = run_config(CONFIGS / "dreamsampler-text-to-nerf.yaml", tmp_path, tiny_sd, STEPS,
                     ["system.prompt_processor_type=deep-floyd-prompt-processor"], tiny_if=tiny_if)
    assert "pixel space, epsilon prediction, 64 px" in run.log
    assert_finite_losses(run)
    assert_sane_image(run.images(f"save/it{STEPS}-0.png")[0])
    # the checkpoint carries the guidance's state: the noise predicted in IF's pixel space
    memory = run.checkpoint()["dreamsampler_guidance"]["sampler"]["memory"]
    assert [tuple(m["eps"].shape) for m in memory.values()] == [(1, 3, 64, 64)]


def test_the_2d_tasks_refuse_a_pixel_space_model_by_name(tiny_sd, tiny_if, tmp_path):
    with pytest.raises(RunFailed, match=r"system.pretrained_model_name_or_path=.* is a pixel-space model"):
        run_config(CONFIGS / "dreamsampler-edit.yaml", tmp_path, tiny_sd, STEPS,
                   [f"system.pretrained_model_name_or_path={tiny_if}"])
