"""Inverse problems: degradation operators with exact adjoints, conjugate gradient, the data-consistency term."""
