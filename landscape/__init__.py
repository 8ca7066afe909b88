"""A reproducible loss-landscape laboratory: data, models, directions, evaluation, store."""

__version__ = "0.1.0"
