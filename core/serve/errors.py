"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with a status."""

from __future__ import annotations

from starlette.responses import JSONResponse

INVALID = "invalid_request_error"


class ApiError(Exception):
    """A request the API refuses (or cannot serve), as the client will see it."""

    def __init__(self, status: int, message: str, *, type: str = INVALID,
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code = param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status == 503 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def bad_key() -> ApiError:
    return ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer KEY' "
                    "with the key this server was started with.", code="invalid_api_key")


def unknown_model(name: str, served: str) -> ApiError:
    return ApiError(404, f"The model '{name}' does not exist here; this server runs "
                    f"'{served}'.", param="model", code="model_not_found")


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than {limit} bytes.",
                    code="request_too_large")


def context_full(why: str, param: str = "messages") -> ApiError:
    """413: the prompt does not fit the context (`why`, a clause)."""
    return ApiError(413, f"{why[:1].upper()}{why[1:]}.", param=param,
                    code="context_length_exceeded")


def queue_full(size: int) -> ApiError:
    return ApiError(503, f"The model is busy and {size} requests are already waiting; "
                    "try again shortly.", type="server_error", code="queue_full")


def shutting_down() -> ApiError:
    return ApiError(503, "The server is shutting down.", type="server_error",
                    code="shutting_down")


def engine_failed(message: str) -> ApiError:
    return ApiError(500, message, type="server_error", code="engine_error")
