from . import dreamsampler_guidance
