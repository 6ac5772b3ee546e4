"""The one status → exception table of the SDK."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from medsecrets import errors
from medsecrets.sdk.errors import (
    ERROR_TABLE,
    ServerError,
    UnexpectedResponseError,
    error_from_response,
)


def body(code: str, message: str = "a message") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}, "request_id": "r1"}).encode()


@pytest.mark.parametrize(("status", "code", "cls"), ERROR_TABLE)
def test_every_row_maps_to_its_class_with_the_server_code(
    status: int, code: str, cls: type[errors.MedsecretsError]
) -> None:
    error = error_from_response(status, body(code), subject="medessence/dev/database")
    assert type(error) is cls
    assert error.code == code


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.InvalidRequest),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDenied),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (410, errors.ScheduledForDeletion),
        (413, errors.TooLargeError),
        (418, errors.InvalidRequest),
        (500, ServerError),
        (502, errors.ProviderError),
        (503, errors.SealedError),
        (504, ServerError),
    ],
)
def test_unknown_codes_and_bodies_fall_back_by_status(
    status: int, cls: type[errors.MedsecretsError]
) -> None:
    assert type(error_from_response(status, body("brand_new_code"))) is cls
    assert type(error_from_response(status, b"<html>proxy error</html>")) is cls


def test_the_server_message_is_kept_and_the_raw_body_never_used() -> None:
    error = error_from_response(404, body("not_found", "secret 'x/y/z' not found"))
    assert str(error) == "secret 'x/y/z' not found"
    error = error_from_response(502, b"canary-in-an-html-page")
    assert "canary" not in str(error)
    assert "502" in str(error)


def test_rich_errors_are_rebuilt() -> None:
    message = "secret 'medessence/dev/database' is scheduled for deletion on 2026-02-01"
    error = error_from_response(
        410, body("scheduled_for_deletion", message), subject="medessence/dev/database"
    )
    assert isinstance(error, errors.ScheduledForDeletion)
    assert error.path == "medessence/dev/database"
    assert error.purge_at == dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    assert str(error) == message
    error = error_from_response(
        422, body("validation_failed", "field 'port' failed validation: integer 1-65535")
    )
    assert isinstance(error, errors.ValidationError)
    assert (error.field, error.rule) == ("port", "integer 1-65535")


def test_client_only_errors_belong_to_the_tree() -> None:
    assert issubclass(UnexpectedResponseError, errors.MedsecretsError)
    assert issubclass(ServerError, errors.MedsecretsError)
