"""A fingerprint of the run in every checkpoint, checked on ``resume=``: a checkpoint of another system
or of a run shaped differently (another 2D task, NFE, canvas, guidance mode, ...) is refused with the
fields that differ, instead of continuing silently as something else."""
from typing import Any, Dict, Tuple

RUN_KEY = "dreamsampler_run"


def _field(cfg, dotted: str):
    """``cfg.a.b`` for ``dotted`` = "a.b" (a config node or a dict at each level), None when absent."""
    node = cfg
    for part in dotted.split("."):
        node = node.get(part) if hasattr(node, "get") else getattr(node, part, None)
        if node is None:
            return None
    return node if isinstance(node, (str, int, float, bool)) else str(node)


class RunFingerprintMixin:
    """Put it before the threestudio base class; ``RUN_SHAPING`` names the (dotted) ``system.*`` fields
    a checkpoint must agree on to be resumed."""

    RUN_SHAPING: Tuple[str, ...] = ()

    def run_fingerprint(self) -> Dict[str, Any]:
        return {"system": type(self).__name__, **{f"system.{k}": _field(self.cfg, k) for k in self.RUN_SHAPING}}

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint[RUN_KEY] = self.run_fingerprint()
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        saved, here = checkpoint.get(RUN_KEY), self.run_fingerprint()
        if saved is not None and saved != here:
            diff = ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {here.get(k)!r} here"
                             for k in sorted(set(saved) | set(here)) if saved.get(k) != here.get(k))
            raise ValueError(
                f"resume=: the checkpoint is of another run ({diff}); resume it with its own config "
                "(the trial's configs/parsed.yaml)"
            )
        super().on_load_checkpoint(checkpoint)
