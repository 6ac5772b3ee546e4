"""Fixtures shared by the monitor tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from medsecrets.catalog import default_catalog
from medsecrets.testing.anomalies import HONEYTOKENS


@pytest.fixture(scope="module")
def is_honeytoken() -> Callable[[str], bool]:
    """The packaged catalog's honeytoken test, with the synthetic data set's decoys."""
    catalog = dataclasses.replace(default_catalog(), honeytokens=frozenset(HONEYTOKENS))
    return catalog.is_honeytoken
