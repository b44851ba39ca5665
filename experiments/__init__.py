"""Experiments for spherax: models, data pipelines, training (REFERENCE §7)."""
