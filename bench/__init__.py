"""Benchmarks: print numbers and ratios; never asserted in the test suite."""
