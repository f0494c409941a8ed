"""The live server: an OpenAI-compatible HTTP API (FastAPI) over the :class:`~live.controller.Controller`.

Routes:

- ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream: true`` answers with
  server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``), ``GET /v1/models``;
- ``GET /health`` (never needs the API key), ``GET /metrics`` (Prometheus text);
- management, used by ``sllmsim deploy/update/delete/status``: ``POST /register`` and ``POST /update``
  (body: a deploy config exactly as the spec's files), ``POST /delete`` (``{"models": [...]}``,
  answers once the models are drained), ``GET /status``;
- ``GET /records``: the run's request and phase records (shared format, seconds since server start).

Errors use OpenAI's body (``{"error": {"message", "type", "param", "code"}}``): 400 for malformed
JSON or an invalid deploy config, 422 for a request field of the wrong shape (``param`` names it),
401 for a missing or wrong API key, 404 for a model that is not deployed (listing those that are),
409 for a deploy conflict, 500 when the model failed to load (with the reason).
"""

from __future__ import annotations

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
from live.controller import ConflictError, Controller, LoadFailedError, Ticket, UnknownModelError
from live.generation import GenerationInputError, GenerationRequest, SamplingParams
from live.records import LiveRecorder
from live.worker import Finished, LocalNodeWorker, TextDelta, default_devices

logger = logging.getLogger("sllmsim.live")

#: Paths that answer without the API key.
_OPEN_PATHS = frozenset({"/health"})


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": type_, "param": param, "code": code}})


def _field_path(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _install_error_handlers(app: FastAPI) -> None:
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
        return _error(422, f"invalid request: {problems}", "invalid_request_error", param, "invalid_field")

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> JSONResponse:
        return _error(400, str(exc), "invalid_request_error", exc.field or None, "invalid_config")

    @app.exception_handler(GenerationInputError)
    async def _gen_input(request: Request, exc: GenerationInputError) -> JSONResponse:
        return _error(400, str(exc), "invalid_request_error", exc.field, "invalid_prompt")

    @app.exception_handler(UnknownModelError)
    async def _unknown(request: Request, exc: UnknownModelError) -> JSONResponse:
        return _error(404, str(exc), "invalid_request_error", "model", "model_not_found")

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return _error(409, str(exc), "invalid_request_error", "model", "conflict")

    @app.exception_handler(LoadFailedError)
    async def _load_failed(request: Request, exc: LoadFailedError) -> JSONResponse:
        return _error(500, str(exc), "server_error", None, "model_load_failed")

    @app.exception_handler(SllmsimError)
    async def _other(request: Request, exc: SllmsimError) -> JSONResponse:
        return _error(400, str(exc), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        response = _error(exc.status_code, str(exc.detail), type_)
        if exc.headers:
            response.headers.update(exc.headers)
        return response


class _CollapseSlashes:
    """ASGI middleware: ``//v1/models`` is ``/v1/models`` (``$LLM_SERVER_URL`` ends with a slash, so
    ``$LLM_SERVER_URL/v1/...`` doubles it, and curl sends the path as typed)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = dict(scope, path=re.sub("/{2,}", "/", scope["path"]))
        await self.app(scope, receive, send)


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
                          seed=req.seed, stop=req.stop_sequences())


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


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


def create_app(cluster: ClusterSpec, storage_dir: str | Path, devices: dict[str, str] | None = None,
               api_key: str | None = None, placement: str = "storage_aware", run_dir: str | Path | None = None,
               plots: bool = True, enable_migration: bool = False, reclaim_idle: bool = False,
               autoscale: str = "concurrency") -> FastAPI:
    """The live server's ASGI app. Nodes, store and controller are built when the app starts.

    ``placement``, ``enable_migration`` and ``reclaim_idle`` are the scheduler config: the placement
    policy's name, whether it may free a node by live-migrating running requests (storage-aware
    only), and whether a model that finds no free slot may take the slots of idle instances of other
    models before their keep-alive ends (default: they keep them, as the reference does).
    ``autoscale`` names the autoscaling policy, as a trace's ``scheduler.autoscale`` does.

    With ``run_dir``, the run's records are written there as a run folder (as ``sllmsim run`` writes,
    :func:`sllmsim.output.write_run_folder`) when the server stops.
    """
    storage_dir = Path(storage_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from live.store import StoreRegistry

        node_devices = devices or default_devices(cluster)
        registry = StoreRegistry.for_cluster(storage_dir, cluster, node_devices)
        workers = {n.node_id: LocalNodeWorker(n, registry.node(n.node_id), node_devices[n.node_id])
                   for n in cluster.nodes}
        recorder = LiveRecorder()
        controller = Controller(cluster, workers, registry, storage_dir, recorder, placement=placement,
                                enable_migration=enable_migration, reclaim_idle=reclaim_idle,
                                autoscale=autoscale)
        await controller.start()
        app.state.controller = controller
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

                result = recorder.run_result(Path(run_dir).name, app.state.resolved())
                write_run_folder(Path(run_dir), result, plots=plots)
                logger.info("wrote the run's records to %s", run_dir)

    app = FastAPI(title="sllmsim live", lifespan=lifespan, dependencies=[Depends(_auth_dependency(api_key))])
    app.add_middleware(_CollapseSlashes)
    _install_error_handlers(app)

    def ctl(request: Request) -> Controller:
        return request.app.state.controller

    @app.get("/health")
    async def health(request: Request) -> dict:
        return {"status": "ok", "models": len(ctl(request).deployed_models())}

    @app.get("/v1/models")
    async def list_models(request: Request) -> ModelList:
        created = int(time.time())
        return ModelList(data=[ModelCard(id=name, created=created) for name in ctl(request).deployed_models()])

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        controller = ctl(request)
        gen = GenerationRequest(params=_sampling(body),
                                messages=tuple({"role": m.role, "content": m.text()} for m in body.messages))
        ticket, events, prompt_tokens = await _start(controller, body.model, gen)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return StreamingResponse(_chat_stream(events, body, rid, created, prompt_tokens),
                                     media_type="text/event-stream")
        output = await _drain(events)
        return ChatCompletion(
            id=rid, created=created, model=body.model,
            choices=[ChatChoice(message=AssistantMessage(content=output.text),
                                finish_reason=_finish_reason(output.finish_reason))],
            usage=Usage(prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens,
                        total_tokens=output.prompt_tokens + output.completion_tokens),
        )

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        controller = ctl(request)
        gen = GenerationRequest(params=_sampling(body), prompt=body.prompt_text())
        ticket, events, prompt_tokens = await _start(controller, body.model, gen)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        prefix = body.prompt_text() if body.echo else ""
        if body.stream:
            return StreamingResponse(_completion_stream(events, body, rid, created, prompt_tokens, prefix),
                                     media_type="text/event-stream")
        output = await _drain(events)
        return Completion(
            id=rid, created=created, model=body.model,
            choices=[CompletionChoice(text=prefix + output.text, finish_reason=_finish_reason(output.finish_reason))],
            usage=Usage(prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens,
                        total_tokens=output.prompt_tokens + output.completion_tokens),
        )

    @app.post("/register")
    async def register(request: Request, config: dict = Body(...)) -> dict:
        return await ctl(request).deploy(config)

    @app.post("/update")
    async def update(request: Request, config: dict = Body(...)) -> dict:
        return await ctl(request).update(config)

    @app.post("/delete")
    async def delete(body: DeleteRequest, request: Request) -> dict:
        return {"deleted": await ctl(request).delete(body.models)}

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
        except SllmsimError as exc:  # headers are sent: report in-band, as OpenAI streams do
            yield _sse({"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}})
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
        except SllmsimError as exc:
            yield _sse({"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}})
        yield _sse("[DONE]")


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                    startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread (port 0: a free one); yields its base URL.

    For tests and for tools that drive a live server in-process. The server shuts down gracefully
    (in-flight requests finish) when the block exits.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
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
