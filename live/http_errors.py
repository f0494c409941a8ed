"""How the live server answers what goes wrong: OpenAI's error body
(``{"error": {"message", "type", "param", "code"}}``) for every error the app raises, and the ASGI
middleware in front of the app (unexpected errors as JSON, the request body limit, doubled slashes).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sllmsim.errors import ConfigError, SllmsimError

from live.errors import ConflictError, LoadFailedError, ShuttingDownError, UnknownModelError
from live.generation import GenerationInputError
from live.state_file import StateWriteError

logger = logging.getLogger("sllmsim.live")


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": type_, "param": param, "code": code}})


#: Union-member tags pydantic puts in an error's location (``function-after[...]``, ``list[...]``, ``str``).
_UNION_TAG = re.compile(r".*[\[(].*|str|int|float|bool|list|dict|none")


def _field_path(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body" and not (isinstance(p, str) and _UNION_TAG.fullmatch(p))]
    return ".".join(parts) or "body"


def hide_store_paths(storage_dir: Path):
    """A function that writes the store's absolute path as ``<storage>`` in a message: error bodies go
    to clients, who have no business knowing the server's file layout (the log keeps the full path)."""
    roots = sorted({str(storage_dir), str(storage_dir.resolve()), str(storage_dir.absolute())}, key=len, reverse=True)

    def hide(message: str) -> str:
        for root in roots:
            message = message.replace(root, "<storage>")
        return message

    return hide


def install_error_handlers(app: FastAPI, hide=lambda message: message) -> None:
    """Answer each of live mode's errors with its status and OpenAI's error body; ``hide`` rewrites
    messages that may name the store's path (:func:`hide_store_paths`)."""
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        for err in errors:
            if err.get("type") == "json_invalid":
                detail = err.get("ctx", {}).get("error", err.get("msg", "invalid JSON"))
                return _error(400, f"malformed JSON body: {detail}", "invalid_request_error", None, "invalid_json")
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        param = _field_path(tuple(first.get("loc", ())))
        problems = "; ".join(f"{_field_path(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errors)
        return _error(400, f"invalid request: {problems}", "invalid_request_error", param, "invalid_field")

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> JSONResponse:
        return _error(400, hide(str(exc)), "invalid_request_error", exc.field or None, "invalid_config")

    @app.exception_handler(GenerationInputError)
    async def _gen_input(request: Request, exc: GenerationInputError) -> JSONResponse:
        return _error(400, hide(str(exc)), "invalid_request_error", exc.field, "invalid_prompt")

    @app.exception_handler(UnknownModelError)
    async def _unknown(request: Request, exc: UnknownModelError) -> JSONResponse:
        return _error(404, str(exc), "invalid_request_error", "model", "model_not_found")

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return _error(409, hide(str(exc)), "invalid_request_error", "model", "conflict")

    @app.exception_handler(ShuttingDownError)
    async def _shutting_down(request: Request, exc: ShuttingDownError) -> JSONResponse:
        return _error(503, str(exc), "server_error", None, "shutting_down")

    @app.exception_handler(StateWriteError)
    async def _state(request: Request, exc: StateWriteError) -> JSONResponse:
        return _error(500, hide(str(exc)), "server_error", None, "state_write_failed")

    @app.exception_handler(LoadFailedError)
    async def _load_failed(request: Request, exc: LoadFailedError) -> JSONResponse:
        return _error(500, hide(str(exc)), "server_error", None, "model_load_failed")

    @app.exception_handler(SllmsimError)
    async def _other(request: Request, exc: SllmsimError) -> JSONResponse:
        return _error(400, hide(str(exc)), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        response = _error(exc.status_code, str(exc.detail), type_)
        if exc.headers:
            response.headers.update(exc.headers)
        return response


class JsonErrors:
    """ASGI middleware: an unexpected error becomes OpenAI's JSON error body (500), logged with its
    traceback, and the connection stays usable.

    It sits inside Starlette's ``ServerErrorMiddleware``, which would answer ``text/plain`` and
    re-raise, making uvicorn drop the keep-alive connection (the client's next request was reset).
    An error after the response started (a stream) cannot change the status; the stream generators
    end such a stream with an error event and ``data: [DONE]`` themselves.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            logger.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(send, 500, {"error": {
                    "message": "internal server error (the server's log has the details)",
                    "type": "server_error", "param": None, "code": "internal_error"}})


class CollapseSlashes:
    """ASGI middleware: ``//v1/models`` is ``/v1/models`` (``$LLM_SERVER_URL`` ends with a slash, so
    ``$LLM_SERVER_URL/v1/...`` doubles it, and curl sends the path as typed)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = dict(scope, path=re.sub("/{2,}", "/", scope["path"]))
        await self.app(scope, receive, send)


#: Default ``max_body_bytes``: far above any prompt a served context can take (a 128k-token context
#: is about 0.5 MB of text), far below what parsing costs real memory (a 100 MB body took ~10 GB).
DEFAULT_MAX_BODY_BYTES = 8 * 1024**2


async def _send_json(send, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 before it is parsed.

    A declared ``Content-Length`` over the limit is refused without reading anything; a chunked body
    is read up to the limit and refused as soon as it passes it (then replayed to the app when it fits).
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, what: str) -> dict:
        return {"error": {"message": f"the request body is {what}; this server accepts at most {self.max_bytes} "
                                     "bytes (sllmsim live --max-body-bytes)",
                          "type": "invalid_request_error", "param": None, "code": "body_too_large"}}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length > self.max_bytes:
                return await _send_json(send, 413, self._too_large(f"{length} bytes"))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                chunks.append(message)
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await _send_json(send, 413, self._too_large(f"over {self.max_bytes} bytes"))
            chunks.append(message)
            if not message.get("more_body", False):
                break
        pending = iter(chunks)

        async def replay():
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)
