"""Test support shipped with medsecrets: real throwaway peers (PostgreSQL, moto) for tests and benchmarks."""
