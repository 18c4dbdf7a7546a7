"""Evaluation of learned features: linear probe, weighted kNN, plots and the report."""
