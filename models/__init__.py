"""Network definitions only: Flax Linen modules and jraph networks, no training code."""
