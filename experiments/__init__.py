"""Experiments for spherax: models, data pipelines, training, and a config per paper protocol."""
