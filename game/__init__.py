"""The multi-round game: the one place that calls both generating and training."""
