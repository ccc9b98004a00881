"""Simulated field devices for the demo, tests and benchmarks."""
