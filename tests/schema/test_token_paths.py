"""Token paths cover segment by segment (``covers``), listings by their whole reach
(``covers_listing``)."""

from __future__ import annotations

import pytest

from medsecrets.schema.tokens import covers, covers_listing


@pytest.mark.parametrize(
    ("prefix", "path", "covered"),
    [
        ("*", "medessence/production/database", True),
        ("medessence/production", "medessence/production", True),
        ("medessence/production", "medessence/production/database", True),
        ("medessence/production", "medessence/production/database/primary", True),
        ("medessence/production", "medessence/production-eu/database", False),
        ("medessence/production", "medessence/productionx", False),
        ("medessence/prod", "medessence/production/database", False),
        ("medessence/production/", "medessence/production/database", True),
        ("medessence/production/", "medessence/production", False),
        ("medessence/production/database", "medessence/production/database-old", False),
        ("sys", "sys/audit", True),
        ("sys/", "sys/audit", True),
        ("sys/audit", "sys/alerts", False),
        ("medessence/staging", "medessence/staging/", True),  # provision's check
    ],
)
def test_a_token_path_covers_itself_and_what_lies_under_it(
    prefix: str, path: str, covered: bool
) -> None:
    assert covers(prefix, path) is covered


@pytest.mark.parametrize(
    ("prefix", "listed", "covered"),
    [
        ("*", "", True),
        ("*", "medessence/prod", True),
        ("medessence/production", "medessence/production/", True),
        ("medessence/production", "medessence/production/data", True),
        ("medessence/production", "medessence/production", False),  # names production-eu
        ("medessence/production", "medessence/prod", False),
        ("medessence/production", "", False),
        ("medessence/production/", "medessence/production/", True),
        ("medessence/production/", "medessence/production", False),
    ],
)
def test_a_listing_is_covered_only_when_all_it_can_name_is(
    prefix: str, listed: str, covered: bool
) -> None:
    assert covers_listing(prefix, listed) is covered
