"""Sweeps: the spec, the skip rule, the trial runner."""
