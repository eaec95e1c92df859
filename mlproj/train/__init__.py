"""The engine: machinery config, state and seeding, checkpoints, models, DDP, metrics, tracker, the loop."""
