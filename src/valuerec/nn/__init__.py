"""Neural building blocks shared by the value and recommendation models (PyTorch)."""
