"""The guidance's state (schedule position, carried noise) saved with the checkpoint and restored on
``resume=``, so a resumed run continues the reverse schedule exactly."""
from typing import Any, Dict, Optional

GUIDANCE_STATE_KEY = "dreamsampler_guidance"


class GuidanceStateMixin:
    """For systems that build ``self.guidance`` in ``on_fit_start``: Lightning restores the checkpoint
    before that, so the state waits until :meth:`restore_guidance_state` is called once the guidance
    exists. Put it before the threestudio base class."""

    _pending_guidance_state: Optional[dict] = None

    def restore_guidance_state(self) -> None:
        if self._pending_guidance_state is not None:
            self.guidance.load_state_dict(self._pending_guidance_state)
            self._pending_guidance_state = None

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        if hasattr(self, "guidance") and hasattr(self.guidance, "state_dict"):
            checkpoint[GUIDANCE_STATE_KEY] = self.guidance.state_dict()
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get(GUIDANCE_STATE_KEY)
        if state is None:
            return
        if hasattr(self, "guidance"):
            self.guidance.load_state_dict(state)
        else:
            self._pending_guidance_state = state
