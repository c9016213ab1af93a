"""The routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions.

Every request is checked in this order: API key (401), body size (413, before parsing),
JSON (400), fields (400), model name (404); then the front desk admits it (413 when the
prompt does not fit the context, 503 when the queue is full) and the reply is streamed or
returned whole; a chat's response says in X-Messages-Out-Of-View how many of its messages
the context policy left out of the model's view. Errors are OpenAI's JSON error shape,
unknown routes included.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from core.serve.desk import FrontDesk
from core.serve.engine_worker import Failed, Finished, Job, Text
from core.serve.errors import ApiError, bad_key, bad_request, too_large, unknown_model
from core.serve.schemas import parse_chat, parse_completion
from core.serve.sse import ChatShape, CompletionShape, stream

OUT_OF_VIEW = "X-Messages-Out-Of-View"  # how many of a chat's messages the model did not see
DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body up to this is read and dropped, so the
# client gets its 413 instead of a reset connection; past it the connection is closed


@dataclass
class Service:
    """What the routes need: the model's name, the key, the body cap, the desk."""

    model_name: str
    api_key: str | None
    max_body: int
    desk: FrontDesk
    desk_thread: Executor
    created: int = 0


def build_app(svc: Service) -> Starlette:
    svc.created = svc.created or int(time.time())

    def guarded(handler: Callable) -> Callable:
        async def endpoint(request: Request) -> Response:
            try:
                _authorize(request, svc.api_key)
                return await handler(request)
            except ApiError as e:
                return e.response()
        return endpoint

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_model_card(svc)]})

    async def model(request: Request) -> Response:
        name = request.path_params["name"]
        if name != svc.model_name:
            raise unknown_model(name, svc.model_name)
        return JSONResponse(_model_card(svc))

    async def chat(request: Request) -> Response:
        req = parse_chat(await _read_json(request, svc.max_body))
        _check_model(req.model, svc)
        job = await _admit(svc, svc.desk.admit_chat, req)
        shape = ChatShape(svc.model_name, req.include_usage)
        headers = {OUT_OF_VIEW: str(job.out_of_view)}
        if req.stream:
            return _sse(stream(job, shape), headers)
        return await _whole(job, shape, request, headers=headers)

    async def completions(request: Request) -> Response:
        req = parse_completion(await _read_json(request, svc.max_body))
        _check_model(req.model, svc)
        job, prompt_text = await _admit(svc, svc.desk.admit_completion, req)
        shape = CompletionShape(svc.model_name, req.include_usage)
        prefix = prompt_text if req.echo else ""
        if req.stream:
            return _sse(stream(job, shape, prefix))
        return await _whole(job, shape, request, prefix)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else None
        return ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                        code=code).response()

    return Starlette(routes=[
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/models/{name:path}", guarded(model), methods=["GET"]),
        Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ], exception_handlers={HTTPException: http_error})


def _model_card(svc: Service) -> dict:
    return {"id": svc.model_name, "object": "model", "created": svc.created,
            "owned_by": "tpi-chat"}


def _authorize(request: Request, key: str | None) -> None:
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             key.encode()):
        raise bad_key()


def _check_model(name: str, svc: Service) -> None:
    if name != svc.model_name:
        raise unknown_model(name, svc.model_name)


async def _read_json(request: Request, cap: int) -> object:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_LIMIT:
        raise too_large(cap)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():  # past the cap: read on, keep nothing
            size += len(chunk)
            if size <= cap:
                chunks.append(chunk)
            elif size > DRAIN_LIMIT:
                break
    except ClientDisconnect:
        raise bad_request("The client went away before sending the whole body.") from None
    if size > cap:
        raise too_large(cap)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        raise bad_request("We could not parse the JSON body of your request: send a JSON "
                          "object with Content-Type: application/json.") from None


async def _admit(svc: Service, admit: Callable, req: object):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(svc.desk_thread, admit, req, loop)


def _sse(body, headers: dict[str, str] | None = None) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                      **(headers or {})})


async def _whole(job: Job, shape: ChatShape, request: Request, prefix: str = "",
                 headers: dict[str, str] | None = None) -> Response:
    """Wait for the whole reply; a client that hangs up meanwhile cancels its job."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        job.cancel()
        job.events.put_nowait(None)  # wake the wait below: a queued job sends nothing more

    watcher = asyncio.create_task(watch())
    parts = [prefix]
    try:
        while True:
            ev = await job.events.get()
            if ev is None:
                return Response(status_code=499)  # nobody reads it
            if isinstance(ev, Text):
                parts.append(ev.text)
            elif isinstance(ev, Finished):
                return JSONResponse(shape.whole("".join(parts), ev), headers=headers)
            elif isinstance(ev, Failed):
                return ev.error.response()
    finally:
        watcher.cancel()
        job.cancel()  # done already, or nobody waits for it
