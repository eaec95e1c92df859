"""Writing a run: the Sacred experiment glue, observers, MongoDB, the Git pin."""
