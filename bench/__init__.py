"""Benchmarks of bulk mailbox testing: `python -m bench.run` (or `make bench`); see bench/README.md."""
