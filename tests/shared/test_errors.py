"""The error tree: each JSON-RPC code has one meaning, and every "retry later" says when."""

import orjson

from shared import errors


def _classes(root: type[errors.MusterError]) -> list[type[errors.MusterError]]:
    found = [root]
    for sub in root.__subclasses__():
        found += _classes(sub)
    return found


TREE = _classes(errors.MusterError)


def test_each_code_has_one_meaning() -> None:
    """Classes sharing a code are one line of descent (QueueFull is a kind of AtCapacity), never two branches."""
    by_code: dict[int, list[type[errors.MusterError]]] = {}
    for cls in TREE:
        if cls not in (errors.MusterError, errors.RetryLater, errors.GiveUp, errors.RequestError):
            by_code.setdefault(cls.code, []).append(cls)
    for code, classes in by_code.items():
        root = min(classes, key=lambda c: len(c.__mro__))
        assert all(issubclass(c, root) for c in classes), (code, classes)
    assert by_code[errors.RESULT_TOO_LARGE] == [errors.ResultTooLarge] and errors.RESULT_TOO_LARGE == -32008
    assert by_code[-32007] == [errors.AuthRequired]  # the lead's decision: -32007 is identity's


def test_every_retry_later_carries_retry_after_in_its_body_and_headers() -> None:
    for cls in TREE:
        if issubclass(cls, errors.RetryLater):
            error = cls("later", 2.5, {"status": 503})
            body = orjson.loads(error.body())
            assert body == {"code": cls.code, "message": "later", "data": {"status": 503, "retryAfter": 2.5}}
            assert error.headers == [(b"retry-after", b"2")]


def test_a_response_echoes_the_request_id_as_bytes_and_a_lone_surrogate_is_escaped() -> None:
    error = errors.InvalidParams("Unknown tool: \ud800")
    response = error.response(b"1180591620717411303424")
    assert response.startswith(b'{"jsonrpc":"2.0","id":1180591620717411303424,"error":{"code":-32602')
    assert b"\\ud800" in response and error.status == 200
    assert errors.InvalidRequest("x").status == 400 and errors.ServiceUnavailable("x", 1).status == 503


def test_the_cancelled_code_is_the_mcp_package_s() -> None:
    from mcp.server.streamable_http import REQUEST_CANCELLED

    assert errors.CANCELLED == REQUEST_CANCELLED
