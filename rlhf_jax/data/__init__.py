"""Data: preference sets, prompt sets, prompt templates, input pipelines and the synthetic task."""
