"""medsecrets benchmarks: each module measures against a ceiling taken in the same run.

Run with ``make bench`` (``python -m benchmarks``); figures land in ``docs/benchmarks.md``.
"""
