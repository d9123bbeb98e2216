"""Training: the one loop (trainer.py) and the training-state files it resumes from (state.py)."""
