"""The live server: an OpenAI-compatible HTTP API (FastAPI) over the :class:`~live.controller.Controller`.

Routes:

- ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream: true`` answers with
  server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``), ``GET /v1/models``;
- ``GET /health`` (never needs the API key), ``GET /metrics`` (Prometheus text);
- management, used by ``sllmsim deploy/update/delete/status``: ``POST /register`` and ``POST /update``
  (body: a deploy config exactly as the spec's files), ``POST /delete`` (``{"models": [...]}``, or
  ``{"model": NAME}`` as ServerlessLLM's ``sllm delete`` posts; answers once the models are drained),
  ``GET /status``; ``GET /v1/models`` also lists the models under ``models``, which ``sllm status`` reads;
- ``GET /records``: the run's request and phase records (shared format, seconds since server start).

Errors use OpenAI's body (``{"error": {"message", "type", "param", "code"}}``): 400 for malformed
JSON, an invalid deploy config or a request field of the wrong type or range (``param`` names it),
401 for a missing or wrong API key, 404 for a model that is not deployed (listing those that are),
409 for a deploy conflict, 500 when the model failed to load (with the reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sllmsim.config.hardware import ClusterSpec
from sllmsim.errors import ConfigError, SllmsimError

from live.api_models import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    DeleteRequest,
    ModelCard,
    ModelList,
    Usage,
)
from live.controller import Controller
from live.errors import ConflictError, LoadFailedError, UnknownModelError
from live.generation import GenerationInputError, GenerationRequest, SamplingParams
from live.records import LiveRecorder
from live.state import Ticket
from live.state_file import StateWriteError
from live.worker import Finished, LocalNodeWorker, TextDelta, default_devices

logger = logging.getLogger("sllmsim.live")

#: Paths that answer without the API key.
_OPEN_PATHS = frozenset({"/health"})


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": type_, "param": param, "code": code}})


#: Union-member tags pydantic puts in an error's location (``function-after[...]``, ``list[...]``, ``str``).
_UNION_TAG = re.compile(r".*[\[(].*|str|int|float|bool|list|dict|none")


def _field_path(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body" and not (isinstance(p, str) and _UNION_TAG.fullmatch(p))]
    return ".".join(parts) or "body"


def _hide_store_paths(storage_dir: Path):
    """A function that writes the store's absolute path as ``<storage>`` in a message: error bodies go
    to clients, who have no business knowing the server's file layout (the log keeps the full path)."""
    roots = sorted({str(storage_dir), str(storage_dir.resolve()), str(storage_dir.absolute())}, key=len, reverse=True)

    def hide(message: str) -> str:
        for root in roots:
            message = message.replace(root, "<storage>")
        return message

    return hide


def _install_error_handlers(app: FastAPI, hide=lambda message: message) -> None:
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


class _JsonErrors:
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


class _CollapseSlashes:
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


class _BodyLimit:
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


def _auth_dependency(api_key: str | None):
    async def check(request: Request) -> None:
        if api_key is None or request.url.path in _OPEN_PATHS:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise StarletteHTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                         headers={"WWW-Authenticate": "Bearer"})

    return check


def _sampling(req: ChatCompletionRequest | CompletionRequest) -> SamplingParams:
    return SamplingParams(max_tokens=req.max_new_tokens(), temperature=req.temperature, top_p=req.top_p,
                          seed=req.seed, stop=req.stop_sequences(), max_tokens_given=req.max_tokens_given())


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def _stream_error(exc: Exception) -> str:
    """The error event that ends a stream which failed after its headers were sent."""
    if isinstance(exc, SllmsimError):
        message = str(exc)
    else:
        logger.error("a stream failed: %r", exc, exc_info=exc)
        message = "internal server error (the server's log has the details)"
    return _sse({"error": {"message": message, "type": "server_error", "param": None, "code": None}})


def _finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


async def _start(controller: Controller, model: str, request: GenerationRequest
                 ) -> tuple[Ticket, AsyncIterator, int]:
    """Admit the request (waiting for a cold start) and run it until the prompt is accepted.

    Errors up to here (unknown model, failed load, prompt too long) still become a plain HTTP error,
    even for a streaming request.
    """
    ticket = await controller.admit(model)
    events = controller.generate(ticket, request)
    try:
        first = await events.__anext__()
    except BaseException:
        controller.abandon(ticket, "request failed before generation started")
        raise
    return ticket, events, first.prompt_tokens


def _check_import_allowed(config: dict, roots: list[Path] | None) -> None:
    """With ``roots`` (``--import-from``), a deploy may import a local folder only from under them."""
    value = (config.get("backend_config") or {}).get("pretrained_model_name_or_path") \
        if isinstance(config.get("backend_config"), dict) else None
    if roots is None or not isinstance(value, str) or not value:
        return
    folder = Path(value).expanduser()
    if folder.is_dir() and not any(folder.resolve().is_relative_to(r) for r in roots):
        raise ConfigError("deploy request", "backend_config.pretrained_model_name_or_path",
                          f"this server imports local folders only from under {', '.join(map(str, roots))} "
                          "(sllmsim live --import-from); import it with `sllmsim import` instead")


class _ClientGone(Exception):
    """The client closed its connection before the answer was ready."""


async def _wait_for_disconnect(request: Request) -> None:
    """Return when the client disconnects.

    Called once the body has been read: the server's ``receive`` then yields nothing but the
    ``http.disconnect`` message (a non-streaming handler is not told otherwise).
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_client_leaves(request: Request, work):
    """Await the coroutine ``work``, cancelling it when the client disconnects first (or the server's
    bounded drain ends, :class:`Drain`).

    Cancelling is how a request is abandoned in every state: queued or waiting for a cold start
    (:meth:`Controller.admit` takes it off the queue), prefilling or decoding (closing the worker's
    event stream stops the generation at its next token and frees the slot); either way it is
    recorded as failed with the reason. Raises :class:`_ClientGone` or :class:`ShuttingDownError`.
    """
    drain: Drain = request.app.state.drain
    task = asyncio.ensure_future(work)
    watchers = {asyncio.ensure_future(_wait_for_disconnect(request)): _ClientGone,
                asyncio.ensure_future(drain.aborted.wait()): ShuttingDownError}
    try:
        await asyncio.wait({task, *watchers}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            for watcher, error in watchers.items():
                if watcher.done() and not watcher.cancelled():
                    raise error(drain.REASON if error is ShuttingDownError else "")
        for watcher in watchers:
            watcher.cancel()
    return task.result()


class ShuttingDownError(SllmsimError):
    """The server's drain time ran out before the request finished (HTTP 503, or a stream's error event)."""


class Drain:
    """The server's bounded drain: once :meth:`begin` is called (the exit signal), requests have
    ``drain_s`` seconds to finish; then (or at once, on :meth:`abort`) ``aborted`` is set and every
    request still running ends, recorded as failed with :data:`REASON`."""

    REASON = "the server shut down before the request finished"

    def __init__(self):
        self.aborted = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self.controller: Controller | None = None

    def begin(self, drain_s: float | None) -> None:
        """Start the drain (on the event loop); None drains without a limit."""
        if drain_s is not None and self._timer is None and not self.aborted.is_set():
            self._timer = asyncio.get_running_loop().call_later(max(0.0, drain_s), self.abort)

    def abort(self) -> None:
        """End what remains now."""
        if not self.aborted.is_set():
            logger.warning("drain time is over: ending the requests still running")
            if self.controller is not None:
                self.controller.abort_reason = self.REASON
            self.aborted.set()


async def _abortable(events: AsyncIterator, aborted: asyncio.Event) -> AsyncIterator:
    """``events``, until ``aborted`` is set: then the stream is closed (stopping its generation) and
    :class:`ShuttingDownError` raised, which the SSE generators turn into an error event and ``[DONE]``.

    Each step of ``events`` runs as a task raced against ``aborted``; however this generator ends
    (aborted, closed, or cancelled because the client left) a step still running is cancelled and
    awaited first, so that ``events`` is never closed while it runs and its request always ends.
    """
    waiter = asyncio.ensure_future(aborted.wait())
    step = None
    try:
        while True:
            step = asyncio.ensure_future(events.__anext__())
            await asyncio.wait({step, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                raise ShuttingDownError(Drain.REASON)
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            step = None
            yield event
    finally:
        waiter.cancel()
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
        await events.aclose()


#: File of the run folder where each request is appended (one JSON line) as it ends: what survives
#: a server killed before it writes the run folder.
REQUEST_JOURNAL = "requests.jsonl"

#: What a handler answers to a client that has gone (nobody reads it; nginx's "client closed request").
_CLIENT_GONE_STATUS = 499


def create_app(cluster: ClusterSpec, storage_dir: str | Path, devices: dict[str, str] | None = None,
               api_key: str | None = None, placement: str = "storage_aware", run_dir: str | Path | None = None,
               plots: bool = True, enable_migration: bool = False, reclaim_idle: bool = False,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, store_lock=None,
               import_roots: list[str | Path] | None = None, autoscale: str = "concurrency") -> FastAPI:
    """The live server's ASGI app. Nodes, store and controller are built when the app starts.

    ``placement``, ``enable_migration`` and ``reclaim_idle`` are the scheduler config: the placement
    policy's name, whether it may free a node by live-migrating running requests (storage-aware
    only), and whether a model that finds no free slot may take the slots of idle instances of other
    models before their keep-alive ends (default: they keep them, as the reference does).
    ``autoscale`` names the autoscaling policy, as a trace's ``scheduler.autoscale`` does.

    A request body over ``max_body_bytes`` is answered 413 without being parsed. With
    ``import_roots``, ``POST /register`` imports local folders only from under those folders.

    One server at a time uses a store: the app locks ``storage_dir`` when it starts (raising
    :class:`~live.state_file.StoreLockedError` when another server holds it) unless the caller passes
    the :class:`~live.state_file.StoreLock` it took already (``store_lock``, released when the app stops).

    With ``run_dir``, the run's records are written there as a run folder (as ``sllmsim run`` writes,
    :func:`sllmsim.output.write_run_folder`) when the server stops.
    """
    storage_dir = Path(storage_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from live.state_file import StoreLock

        lock = store_lock or StoreLock(storage_dir)
        try:
            async with serving(app):
                yield
        finally:
            lock.release()

    @asynccontextmanager
    async def serving(app: FastAPI):
        from live.store import StoreRegistry

        node_devices = devices or default_devices(cluster)
        registry = StoreRegistry.for_cluster(storage_dir, cluster, node_devices)
        workers = {n.node_id: LocalNodeWorker(n, registry.node(n.node_id), node_devices[n.node_id])
                   for n in cluster.nodes}
        recorder = LiveRecorder(journal=None if run_dir is None else Path(run_dir) / REQUEST_JOURNAL)
        controller = Controller(cluster, workers, registry, storage_dir, recorder, placement=placement,
                                enable_migration=enable_migration, reclaim_idle=reclaim_idle,
                                autoscale=autoscale)
        await controller.start()
        app.state.controller = controller
        app.state.drain.controller = controller
        app.state.resolved = lambda: {"hardware": cluster.source, "storage": str(storage_dir),
                                      "devices": dict(node_devices), "scheduler": placement,
                                      "enable_migration": enable_migration, "reclaim_idle": reclaim_idle,
                                      "autoscale": autoscale,
                                      "models": list(controller.deploy_history)}
        logger.info("serving %d node(s): %s", len(workers),
                    ", ".join(f"node {k} on {v}" for k, v in node_devices.items()))
        try:
            yield
        finally:
            await controller.close()
            if run_dir is not None:
                from sllmsim.output import write_run_folder

                recorder.close_journal()
                result = recorder.run_result(Path(run_dir).name, app.state.resolved())
                write_run_folder(Path(run_dir), result, plots=plots)
                logger.info("wrote the run's records to %s", run_dir)

    # FastAPI's generated docs are routes of their own, outside the API key's dependency: with a key
    # they are off (they describe every route to whoever asks).
    docs = {} if api_key is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="sllmsim live", lifespan=lifespan, dependencies=[Depends(_auth_dependency(api_key))], **docs)
    app.add_middleware(_JsonErrors)
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(_CollapseSlashes)
    _install_error_handlers(app, _hide_store_paths(storage_dir))
    app.state.drain = Drain()

    def ctl(request: Request) -> Controller:
        return request.app.state.controller

    @app.get("/health")
    async def health(request: Request) -> dict:
        return {"status": "ok", "models": len(ctl(request).deployed_models())}

    # HEAD answers like GET (probes use it); kept out of the schema, where it would repeat GET's operation id.
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @app.get("/v1/models")
    async def list_models(request: Request) -> ModelList:
        created = int(time.time())
        cards = [ModelCard(id=name, created=created) for name in ctl(request).deployed_models()]
        return ModelList(data=cards, models=cards)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        try:
            return await _unless_client_leaves(request, _chat(ctl(request), body, request.app.state.drain))
        except _ClientGone:
            return Response(status_code=_CLIENT_GONE_STATUS)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        try:
            return await _unless_client_leaves(request, _completion(ctl(request), body, request.app.state.drain))
        except _ClientGone:
            return Response(status_code=_CLIENT_GONE_STATUS)

    roots = None if import_roots is None else [Path(r).expanduser().resolve() for r in import_roots]

    @app.post("/register")
    async def register(request: Request, config: dict = Body(...)) -> dict:
        _check_import_allowed(config, roots)
        return await ctl(request).deploy(config)

    @app.post("/update")
    async def update(request: Request, config: dict = Body(...)) -> dict:
        return await ctl(request).update(config)

    @app.post("/delete")
    async def delete(body: DeleteRequest, request: Request) -> dict:
        return {"deleted": await ctl(request).delete(body.names())}

    @app.get("/status")
    async def status(request: Request) -> dict:
        return ctl(request).status()

    @app.get("/records")
    async def records(request: Request) -> dict:
        data = ctl(request).recorder.to_json()
        data["resolved_config"] = request.app.state.resolved()
        return data

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        payload, content_type = ctl(request).metrics.render()
        return Response(content=payload, media_type=content_type)

    return app


async def _chat(controller: Controller, body: ChatCompletionRequest, drain: Drain):
    gen = GenerationRequest(params=_sampling(body),
                            messages=tuple({"role": m.role, "content": m.text()} for m in body.messages))
    ticket, events, prompt_tokens = await _start(controller, body.model, gen)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        # From here Starlette's streaming response watches for the disconnect and closes the stream.
        return StreamingResponse(_chat_stream(_abortable(events, drain.aborted), body, rid, created, prompt_tokens),
                                 media_type="text/event-stream")
    output = await _drain(events)
    return ChatCompletion(
        id=rid, created=created, model=body.model,
        choices=[ChatChoice(message=AssistantMessage(content=output.text),
                            finish_reason=_finish_reason(output.finish_reason))],
        usage=Usage(prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens,
                    total_tokens=output.prompt_tokens + output.completion_tokens),
    )


async def _completion(controller: Controller, body: CompletionRequest, drain: Drain):
    gen = GenerationRequest(params=_sampling(body), prompt=body.prompt_text())
    ticket, events, prompt_tokens = await _start(controller, body.model, gen)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    prefix = body.prompt_text() if body.echo else ""
    if body.stream:
        return StreamingResponse(_completion_stream(_abortable(events, drain.aborted), body, rid, created,
                                                    prompt_tokens, prefix),
                                 media_type="text/event-stream")
    output = await _drain(events)
    return Completion(
        id=rid, created=created, model=body.model,
        choices=[CompletionChoice(text=prefix + output.text, finish_reason=_finish_reason(output.finish_reason))],
        usage=Usage(prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens,
                    total_tokens=output.prompt_tokens + output.completion_tokens),
    )


async def _drain(events: AsyncIterator):
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Finished):
                return event.output
    raise RuntimeError("generation ended without a result")


async def _chat_stream(events: AsyncIterator, body: ChatCompletionRequest, rid: str, created: int,
                       prompt_tokens: int) -> AsyncIterator[str]:
    def chunk(delta: ChunkDelta, finish: str | None = None) -> str:
        return _sse(ChatCompletionChunk(id=rid, created=created, model=body.model,
                                        choices=[ChatChunkChoice(delta=delta, finish_reason=finish)]
                                        ).model_dump(exclude_none=True))

    async with contextlib.aclosing(events):
        try:
            yield chunk(ChunkDelta(role="assistant", content=""))
            async for event in events:
                if isinstance(event, TextDelta) and event.text:
                    yield chunk(ChunkDelta(content=event.text))
                elif isinstance(event, Finished):
                    out = event.output
                    yield chunk(ChunkDelta(), _finish_reason(out.finish_reason))
                    if body.include_usage():
                        usage = Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                                      total_tokens=out.prompt_tokens + out.completion_tokens)
                        yield _sse(ChatCompletionChunk(id=rid, created=created, model=body.model, choices=[],
                                                       usage=usage).model_dump(exclude_none=True))
        except Exception as exc:  # headers are sent: report in-band, as OpenAI streams do
            yield _stream_error(exc)
        yield _sse("[DONE]")


async def _completion_stream(events: AsyncIterator, body: CompletionRequest, rid: str, created: int,
                             prompt_tokens: int, prefix: str) -> AsyncIterator[str]:
    def chunk(text: str, finish: str | None = None, usage: Usage | None = None, choices: bool = True) -> str:
        payload = Completion(id=rid, created=created, model=body.model,
                             choices=[CompletionChoice(text=text, finish_reason=finish)] if choices else [],
                             usage=usage).model_dump()
        if usage is None:
            payload.pop("usage")
        return _sse(payload)

    async with contextlib.aclosing(events):
        try:
            if prefix:
                yield chunk(prefix)
            async for event in events:
                if isinstance(event, TextDelta) and event.text:
                    yield chunk(event.text)
                elif isinstance(event, Finished):
                    out = event.output
                    yield chunk("", _finish_reason(out.finish_reason))
                    if body.include_usage():
                        yield chunk("", usage=Usage(prompt_tokens=out.prompt_tokens,
                                                    completion_tokens=out.completion_tokens,
                                                    total_tokens=out.prompt_tokens + out.completion_tokens),
                                    choices=False)
        except Exception as exc:
            yield _stream_error(exc)
        yield _sse("[DONE]")


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0, drain_s: float | None = None,
                log_level: str = "warning", **uvicorn_options):
    """A uvicorn server for ``app`` whose shutdown drains requests for at most ``drain_s`` seconds.

    On the exit signal (SIGTERM, Ctrl-C) it stops accepting connections and lets running requests
    finish; once ``drain_s`` has passed — or at a second signal — the requests still running end:
    streams with an error event and ``data: [DONE]``, others with a 503, all recorded as failed. The
    app's shutdown (releasing instances, writing the run folder) then runs as usual. A third signal
    quits at once. ``drain_s`` None drains without a limit.
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        signals = 0

        def handle_exit(self, sig, frame) -> None:
            self.signals += 1
            if self.signals == 1:
                self.should_exit = True
            elif self.signals == 2:
                logger.warning("second exit signal: ending the requests still running")
                loop = getattr(app.state, "loop", None)
                if loop is not None:
                    loop.call_soon_threadsafe(app.state.drain.abort)
            else:
                self.force_exit = True

        async def shutdown(self, sockets=None) -> None:
            app.state.loop = asyncio.get_running_loop()
            app.state.drain.begin(drain_s)
            if self.signals >= 2:
                app.state.drain.abort()
            await super().shutdown(sockets)

    # uvicorn's own limit is a backstop: the drain ends every request well before it.
    backstop = None if drain_s is None else drain_s + 10.0
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=backstop, **uvicorn_options)
    return DrainingServer(config)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                    startup_timeout_s: float = 60.0, drain_s: float | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread (port 0: a free one); yields its base URL.

    For tests and for tools that drive a live server in-process. The server shuts down gracefully
    when the block exits: in-flight requests finish (within ``drain_s`` seconds, see :func:`make_server`).
    """
    server = make_server(app, host=host, port=port, drain_s=drain_s)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="sllmsim-live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    # uvicorn offers no start-up event to wait on; this wait happens once per server.
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=5)
            raise RuntimeError(f"the live server did not start: {failure[0] if failure else 'see the log'}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{host}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
