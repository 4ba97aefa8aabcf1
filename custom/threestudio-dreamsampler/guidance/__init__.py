from . import deep_floyd_prompts, dreamsampler_guidance
