"""Known third-party warnings silenced in runs through the launcher, so that what a run prints is ours.

Each entry is (category, message regex, module regex) for :func:`warnings.filterwarnings`; the module
is the one the warning is attributed to. Only other projects' deprecation notices and import-time
chatter are listed; warnings from this project (``dreamsampler``, ``threestudio-dreamsampler``) and
everything not listed always show.
"""
from __future__ import annotations

import warnings

THIRD_PARTY = r"(threestudio|timm|torch|controlnet_aux|diffusers|transformers|huggingface_hub|pytorch_lightning|lightning_fabric|torchmetrics|kornia)(\..*)?$"

KNOWN = [
    (FutureWarning, "", THIRD_PARTY),  # torch.cuda.amp.* deprecations, timm's moved modules, torch.jit.script
    (DeprecationWarning, "", THIRD_PARTY),
    (UserWarning, r"register_new_resolver\(\) is deprecated", ""),  # omegaconf, called by threestudio
    (UserWarning, r"Overwriting .* in registry", ""),  # timm, re-registered by controlnet_aux
    (UserWarning, r"The module 'mediapipe' is not installed", ""),  # controlnet_aux at import
    (UserWarning, r"Code snapshot is not saved", ""),  # threestudio outside a git repository
    (UserWarning, r"Using torch.cross without specifying the dim arg", ""),  # threestudio's camera code
    (UserWarning, r"The `local_dir_use_symlinks` argument is deprecated", ""),  # huggingface_hub
]


def silence_known_warnings() -> None:
    """Install the filters of :data:`KNOWN` (in this process; every process of a run imports the launcher)."""
    for category, message, module in KNOWN:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
