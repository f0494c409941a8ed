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
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sllmsim.config.hardware import ClusterSpec
from sllmsim.core.registry import DEFAULT_AUTOSCALE, DEFAULT_PLACEMENT
from sllmsim.errors import ConfigError

from live.api_models import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    DeleteRequest,
    ModelCard,
    ModelList,
    Usage,
)
from live.controller import Controller
from live.errors import ShuttingDownError
from live.generation import GenerationRequest, SamplingParams
from live.http_errors import (
    DEFAULT_MAX_BODY_BYTES,
    BodyLimit,
    CollapseSlashes,
    JsonErrors,
    hide_store_paths,
    install_error_handlers,
)
from live.records import LiveRecorder
from live.sse import chat_stream, completion_stream, finish_reason
from live.state import Ticket
from live.worker import Finished, LocalNodeWorker, default_devices

logger = logging.getLogger("sllmsim.live")

#: Paths that answer without the API key.
_OPEN_PATHS = frozenset({"/health"})


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
               api_key: str | None = None, placement: str = DEFAULT_PLACEMENT, run_dir: str | Path | None = None,
               plots: bool = True, enable_migration: bool = False, reclaim_idle: bool = False,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, store_lock=None,
               import_roots: list[str | Path] | None = None, autoscale: str = DEFAULT_AUTOSCALE,
               seed: int = 0) -> FastAPI:
    """The live server's ASGI app. Nodes, store and controller are built when the app starts.

    ``placement``, ``enable_migration`` and ``reclaim_idle`` are the scheduler config: the placement
    policy's name, whether it may free a node by live-migrating running requests (storage-aware
    only), and whether a model that finds no free slot may take the slots of idle instances of other
    models before their keep-alive ends (default: they keep them, as the reference does).
    ``autoscale`` names the autoscaling policy, as a trace's ``scheduler.autoscale`` does. ``seed``
    is the run seed, as a trace's ``seed``: a seeded policy (``random``) draws what the simulator
    draws for a trace with that seed.

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
                                autoscale=autoscale, seed=seed)
        await controller.start()
        app.state.controller = controller
        app.state.drain.controller = controller
        app.state.resolved = lambda: {"hardware": cluster.source, "storage": str(storage_dir),
                                      "devices": dict(node_devices), "scheduler": placement,
                                      "enable_migration": enable_migration, "reclaim_idle": reclaim_idle,
                                      "autoscale": autoscale, "seed": seed,
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
    app.add_middleware(JsonErrors)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(CollapseSlashes)
    install_error_handlers(app, hide_store_paths(storage_dir))
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
        return StreamingResponse(chat_stream(_abortable(events, drain.aborted), body, rid, created, prompt_tokens),
                                 media_type="text/event-stream")
    output = await _drain(events)
    return ChatCompletion(
        id=rid, created=created, model=body.model,
        choices=[ChatChoice(message=AssistantMessage(content=output.text),
                            finish_reason=finish_reason(output.finish_reason))],
        usage=Usage(prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens,
                    total_tokens=output.prompt_tokens + output.completion_tokens),
    )


async def _completion(controller: Controller, body: CompletionRequest, drain: Drain):
    gen = GenerationRequest(params=_sampling(body), prompt=body.prompt_text())
    ticket, events, prompt_tokens = await _start(controller, body.model, gen)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    prefix = body.prompt_text() if body.echo else ""
    if body.stream:
        return StreamingResponse(completion_stream(_abortable(events, drain.aborted), body, rid, created,
                                                   prompt_tokens, prefix),
                                 media_type="text/event-stream")
    output = await _drain(events)
    return Completion(
        id=rid, created=created, model=body.model,
        choices=[CompletionChoice(text=prefix + output.text, finish_reason=finish_reason(output.finish_reason))],
        usage=Usage(prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens,
                    total_tokens=output.prompt_tokens + output.completion_tokens),
    )


async def _drain(events: AsyncIterator):
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, Finished):
                return event.output
    raise RuntimeError("generation ended without a result")


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
