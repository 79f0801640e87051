"""Benchmarks behind `kiki bench ...` and `make bench`: each prints figures next to a baseline
run in the same process, and the ratio."""
