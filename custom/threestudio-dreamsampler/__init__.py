"""threestudio-dreamsampler: registers the extension's guidances, systems and data modules."""
from . import data, guidance, systems
