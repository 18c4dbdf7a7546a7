"""Synthetic positives: the sharded store and the generation driver."""
