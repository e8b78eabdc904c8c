"""Helpers shared by the benchmark scripts (wrk, nginx, /proc); not a benchmark itself (`make bench`
runs bench/*.py only)."""
