"""Training: datasets in, metrics and model files out; no database access."""
