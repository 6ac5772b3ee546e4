"""Test helpers over real storage files."""

from __future__ import annotations

from pathlib import Path

from medsecrets.storage.sqlite import SqliteStorage


def read_back(path: Path, key: str) -> bytes | None:
    """``key`` as a new ``SqliteStorage`` over ``path`` reads it: what a restart keeps."""
    reopened = SqliteStorage(path)
    try:
        return reopened.get(key)
    finally:
        reopened.close()
