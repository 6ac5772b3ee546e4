"""The ``medsecrets`` command line (Typer + Rich), built on the SDK.

Entry point: ``medsecrets.cli.app:main`` (console script ``medsecrets``; also
``python -m medsecrets.cli``). Exit codes are documented in
``medsecrets.cli.errors`` and ``docs/cli.md``.
"""
