"""Benchmarks of the pipeline on the embedded local cloud: `python -m bench` (`make bench`)."""
