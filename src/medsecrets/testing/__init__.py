"""Test support shipped with medsecrets.

Real throwaway peers (PostgreSQL, moto) for tests and benchmarks.
"""
