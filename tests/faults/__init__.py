"""Fault tests: each case injects one failure and counts what was acknowledged against what arrived."""
