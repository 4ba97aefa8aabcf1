"""Every shipped config in configs/ runs a few steps in real threestudio on the CPU (tiny pipeline,
small sizes, plus the config's own `# smoke:` lines; see smoke.py)."""
import pytest

from .runner import REPO, assert_finite_losses, assert_sane_image, run_config

pytestmark = pytest.mark.threestudio

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
STEPS = 2


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_runs_a_few_steps(config, tiny_sd, tmp_path):
    run = run_config(config, tmp_path, tiny_sd, STEPS)
    assert (run.trial_dir / "configs" / "parsed.yaml").is_file()
    assert run.checkpoint()["global_step"] == STEPS
    images = run.images("save/**/*.png")
    assert images, f"{config.name}: no image saved under {run.trial_dir / 'save'}"
    for image in images:
        assert_sane_image(image)
    assert_finite_losses(run)
