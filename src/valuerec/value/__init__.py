"""Customer value models: Buy-Till-You-Die transaction models, spend models and lifetime value."""
