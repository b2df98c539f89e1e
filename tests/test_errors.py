"""Code-first mapping of error envelopes to the exception tree."""

from __future__ import annotations

import pickle

import pytest

import aiob24flow as b24
from aiob24flow._errors import error_from_envelope


@pytest.mark.parametrize(
    ("body", "status", "cls", "code"),
    [
        (
            {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
            503,
            b24.QueryLimitExceeded,
            "QUERY_LIMIT_EXCEEDED",
        ),
        ({"error": "QUERY_LIMIT_EXCEEDED"}, 429, b24.QueryLimitExceeded, "QUERY_LIMIT_EXCEEDED"),
        ({"error": "OPERATION_TIME_LIMIT"}, 429, b24.OperationTimeLimit, "OPERATION_TIME_LIMIT"),
        ({"error": "ERROR_METHOD_NOT_FOUND"}, 404, b24.MethodNotFound, "ERROR_METHOD_NOT_FOUND"),
        ({"error": "expired_token"}, 401, b24.TokenExpired, "expired_token"),
        ({"error": "invalid_token"}, 401, b24.InvalidToken, "invalid_token"),
        ({"error": "NO_AUTH_FOUND"}, 401, b24.InvalidCredentials, "NO_AUTH_FOUND"),
        ({"error": "INVALID_CREDENTIALS"}, 401, b24.InvalidCredentials, "INVALID_CREDENTIALS"),
        ({"error": "INVALID_CREDENTIALS"}, 403, b24.InvalidCredentials, "INVALID_CREDENTIALS"),
        ({"error": "INVALID_REQUEST"}, 401, b24.InvalidCredentials, "INVALID_REQUEST"),
        ({"error": "insufficient_scope"}, 401, b24.InsufficientScope, "insufficient_scope"),
        ({"error": "insufficient_scope"}, 403, b24.InsufficientScope, "insufficient_scope"),
        ({"error": "ACCESS_DENIED"}, 401, b24.AccessDenied, "ACCESS_DENIED"),
        ({"error": "user_access_error"}, 401, b24.AccessDenied, "user_access_error"),
        ({"error": "OVERLOAD_LIMIT"}, 503, b24.AccessDenied, "OVERLOAD_LIMIT"),
        ({"error": "PORTAL_DELETED"}, 403, b24.AccessDenied, "PORTAL_DELETED"),
        ({"error": "APPLICATION_NOT_FOUND"}, 401, b24.AccessDenied, "APPLICATION_NOT_FOUND"),
        ({"error": "0", "error_description": "Cannot find flow"}, 400, b24.FlowError, "0"),
        ({"error": 0, "error_description": "Cannot find flow"}, 400, b24.FlowError, "0"),
        ({"error": "0", "error_description": "Cannot find flow"}, 200, b24.FlowError, "0"),
        ({"error": "100"}, 400, b24.InvalidArgument, "100"),
        ({"error": 100}, 400, b24.InvalidArgument, "100"),
        (
            {"error": "ERROR_BATCH_LENGTH_EXCEEDED"},
            None,
            b24.BatchCommandError,
            "ERROR_BATCH_LENGTH_EXCEEDED",
        ),
        (
            {"error": "ERROR_BATCH_METHOD_NOT_ALLOWED"},
            None,
            b24.BatchCommandError,
            "ERROR_BATCH_METHOD_NOT_ALLOWED",
        ),
        ({"error": "INTERNAL_SERVER_ERROR"}, 500, b24.ServerError, "INTERNAL_SERVER_ERROR"),
        ({"error": "ERROR_UNEXPECTED_ANSWER"}, 500, b24.ServerError, "ERROR_UNEXPECTED_ANSWER"),
        ({"error": "SOMETHING_NEW"}, 502, b24.ServerError, "SOMETHING_NEW"),
        ({"error": "SOMETHING_NEW"}, 401, b24.AuthError, "SOMETHING_NEW"),
        ({"error": "SOMETHING_NEW"}, 429, b24.OperationTimeLimit, "SOMETHING_NEW"),
        ({"error": "SOMETHING_NEW"}, 400, b24.PortalError, "SOMETHING_NEW"),
    ],
)
def test_mapping(
    body: dict[str, object], status: int | None, cls: type[b24.B24Error], code: str
) -> None:
    err = error_from_envelope(body, status=status, method="m", key="k")
    assert type(err) is cls
    assert err.code == code and err.status == status and err.method == "m" and err.key == "k"
    assert err.description == str(body.get("error_description", ""))


def test_outcome_classification() -> None:
    may_have_run = {b24.ServerError, b24.ResponseLost, b24.RefreshOutcomeUnknown}
    for cls in (
        b24.QueryLimitExceeded,
        b24.OperationTimeLimit,
        b24.MethodNotFound,
        b24.TokenExpired,
        b24.InvalidCredentials,
        b24.FlowError,
        b24.InvalidArgument,
        b24.BatchCommandError,
        b24.RequestNotSent,
        b24.ServerError,
        b24.ResponseLost,
        b24.RefreshRejected,
        b24.RefreshOutcomeUnknown,
    ):
        assert cls("x").may_have_run is (cls in may_have_run), cls


def test_str_repr_and_pickle() -> None:
    err = b24.FlowError(
        "Cannot find flow", code="0", status=400, method="tasks.flow.Flow.activate", key="517"
    )
    assert str(err) == "0 HTTP 400: Cannot find flow (tasks.flow.Flow.activate[517])"
    assert "FlowError(code='0'" in repr(err)
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is b24.FlowError and clone.key == "517" and clone.status == 400
