"""The training agents: the worker (`trainer.worker`) and the fraud-proofer (`trainer.fraudproofer`)."""
