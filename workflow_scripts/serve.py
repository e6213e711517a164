"""Serve trained models over the OpenAI chat-completions protocol, with a chat page at /.

    python -m workflow_scripts.serve results/sft_model [results/base_model ...] [--port 8000]

Endpoints: POST /v1/chat/completions (streaming or not), POST /v1/completions (plain
continuation, for base models), GET /v1/models, GET /health, GET / (the chat page). A model's id
is its directory's name. Any OpenAI client works: base_url http://127.0.0.1:8000/v1, any api_key
unless --api-key is set. Extensions to the protocol: `repetition_penalty` and `ignore_eos`
(generate exactly max_tokens, as vLLM's). Requests that wait together are generated together, in
batches of up to --max-batch that share their settings (on a CPU 16 clients get about 6 times the
tokens/s of one: benchmarks/results/serve_throughput.md); more than --max-queue waiting
answer 503.
Binds 127.0.0.1; give --host 0.0.0.0 and --api-key to serve beyond this machine.
"""
import asyncio
import collections
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from workflow_scripts.lib.common import StageError, log, stage_cli
from workflow_scripts.lib.generation import (DEFAULTS, ReplyRequest, chat_prompt_ids, completion_prompt_ids,
                                             generate_replies, sampling_settings)
from workflow_scripts.lib.models import load_causal_lm

PAGE = Path(__file__).resolve().parent / "web" / "chat.html"


@dataclass
class Limits:
    max_messages: int = 64
    max_prompt_chars: int = 16000
    max_tokens: int = 1024
    max_stops: int = 4


class ApiError(Exception):
    """An OpenAI-style error response: status, message, the request field it is about."""

    def __init__(self, status, message, param=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self):
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(Strict):
    include_usage: bool = False


class Sampling(Strict):
    """The settings both endpoints take; fields OpenAI defines that are not listed here are ignored."""
    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)  # None (as some clients send): the default
    top_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False

    def setting(self, name):
        value = getattr(self, name)
        return DEFAULTS[name] if value is None else value

    def stops(self):
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(Sampling):
    prompt: str


@dataclass
class Generation:
    """One request's generation: run by the worker thread, its events read by the request's handler."""
    model_name: str
    input_ids: list
    max_tokens: int
    settings: dict  # generate's, but max_new_tokens
    stops: list
    seed: int | None
    streaming: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)

    def push(self, kind, value):
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def request(self):
        # Pieces of a reply that is not streamed would only cost the event loop (and the GIL) time.
        emit = (lambda piece: self.push("text", piece)) if self.streaming else (lambda piece: None)
        return ReplyRequest(self.input_ids, self.max_tokens, emit, self.stops, self.cancel.is_set)

    def batch_key(self):
        """Requests of equal keys share one batch; a seeded sampled reply is generated alone, so
        that its seed gives the same reply whatever else is waiting."""
        if self.seed is not None and self.settings["do_sample"]:
            return None
        return self.model_name, json.dumps(self.settings, sort_keys=True)


class Worker:
    """Generates in a thread, for up to max_batch waiting requests at once, from a bounded queue."""

    def __init__(self, models, max_queue, max_batch):
        self.models, self.max_queue, self.max_batch = models, max_queue, max_batch
        self.waiting, self.ready = collections.deque(), threading.Condition()
        self.busy = False
        self.counts = {"finished": 0, "cancelled": 0, "completion_tokens": 0, "batches": 0}
        threading.Thread(target=self.loop, daemon=True).start()

    def submit(self, generation):
        with self.ready:
            for gone in [g for g in self.waiting if g.cancel.is_set()]:  # their clients hung up while waiting
                self.waiting.remove(gone)
            if len(self.waiting) >= self.max_queue:
                raise ApiError(503, f"{self.max_queue} requests are waiting already; try again shortly",
                               kind="server_overloaded")
            self.waiting.append(generation)
            self.ready.notify()

    def next_batch(self):
        """The oldest waiting request and those after it that can share its batch."""
        with self.ready:
            while not self.waiting:
                self.ready.wait()
            first = self.waiting.popleft()
            key = first.batch_key()
            others = [g for g in self.waiting if key is not None and g.batch_key() == key][:self.max_batch - 1]
            for generation in others:
                self.waiting.remove(generation)
            batch = [g for g in [first, *others] if not g.cancel.is_set()]
            self.busy = bool(batch)
            return batch

    def loop(self):
        while True:
            batch = self.next_batch()
            if batch:
                self.run(batch)
            self.busy = False

    def run(self, batch):
        model, tokenizer = self.models[batch[0].model_name]
        torch.manual_seed(batch[0].seed if batch[0].seed is not None else secrets.randbits(63))
        try:
            replies = generate_replies(model, tokenizer, [g.request() for g in batch], batch[0].settings)
        except Exception as err:  # a failed generation answers its requests; the server goes on
            log.exception("generation failed")
            for generation in batch:
                generation.push("error", f"generation failed: {err}")
            return
        self.counts["batches"] += 1
        for generation, reply in zip(batch, replies):
            generation.push("done", reply)
            self.counts["cancelled" if reply.finish_reason == "cancelled" else "finished"] += 1
            self.counts["completion_tokens"] += reply.completion_tokens


class Server:
    """The models, the limits and the worker behind the HTTP endpoints."""

    def __init__(self, model_dirs, limits, max_queue, max_batch, api_key):
        self.models = {}
        for model_dir in model_dirs:
            if model_dir.name in self.models:
                raise StageError(f"{model_dir}: two models named {model_dir.name}; serve directories of distinct names")
            model, tokenizer = load_causal_lm(model_dir)
            if torch.cuda.is_available():
                model.to(torch.bfloat16)
            self.models[model_dir.name] = (model, tokenizer)
            log.info("serving %s as %s on %s", model_dir, model_dir.name, model.device)
        self.limits, self.api_key, self.worker = limits, api_key, Worker(self.models, max_queue, max_batch)
        self.created = int(time.time())

    def check_key(self, request):
        if not self.api_key:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)", kind="authentication_error")

    def model(self, name):
        if name not in self.models:
            raise ApiError(404, f"model {name!r} is not served here; GET /v1/models lists them", "model",
                           "model_not_found")
        return self.models[name]

    def generation(self, body: Sampling, input_ids, loop):
        model, tokenizer = self.model(body.model)
        max_tokens = self.max_tokens(body, len(input_ids), getattr(model.config, "max_position_embeddings", None))
        stops = body.stops()
        if len(stops) > self.limits.max_stops or any(len(s) > 64 for s in stops):
            raise ApiError(400, f"stop takes at most {self.limits.max_stops} strings of at most 64 characters",
                           "stop")
        settings = sampling_settings(tokenizer, body.setting("temperature"), body.setting("top_p"), max_tokens,
                                     body.setting("repetition_penalty"))
        del settings["max_new_tokens"]  # each row's own; the batch generates up to the largest
        if body.ignore_eos:
            settings["min_new_tokens"] = max_tokens
        return Generation(body.model, input_ids, max_tokens, settings, stops, body.seed, body.stream, loop)

    def max_tokens(self, body: Sampling, prompt_tokens, context):
        """The request's max_tokens, checked; left out, what fits the context up to the default."""
        asked = body.max_completion_tokens or body.max_tokens
        room = context - prompt_tokens if context else self.limits.max_tokens
        if asked and asked > self.limits.max_tokens:
            raise ApiError(400, f"max_tokens is {asked}; this server allows at most {self.limits.max_tokens}",
                           "max_tokens")
        if room < (asked or 1):
            raise ApiError(400, f"the prompt is {prompt_tokens} tokens; with max_tokens {asked or 1} that is more "
                                f"than the model's context of {context} tokens", "messages")
        return asked or min(DEFAULTS["max_tokens"], self.limits.max_tokens, room)

    def chat_ids(self, body: ChatRequest):
        _, tokenizer = self.model(body.model)
        if not tokenizer.chat_template:
            raise ApiError(400, f"model {body.model!r} has no chat template; use /v1/completions", "model")
        if len(body.messages) > self.limits.max_messages:
            raise ApiError(400, f"{len(body.messages)} messages; this server takes at most "
                                f"{self.limits.max_messages}", "messages")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        self.check_length(sum(len(m["content"]) for m in messages), "messages")
        return chat_prompt_ids(tokenizer, messages)

    def completion_ids(self, body: CompletionRequest):
        _, tokenizer = self.model(body.model)
        self.check_length(len(body.prompt), "prompt")
        return completion_prompt_ids(tokenizer, body.prompt)

    def check_length(self, chars, param):
        if chars > self.limits.max_prompt_chars:
            raise ApiError(400, f"the {param} hold {chars} characters; this server takes at most "
                                f"{self.limits.max_prompt_chars}", param)


def error_response(status, message, param=None, kind="invalid_request_error"):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status)


def validation_error(exc: RequestValidationError):
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return error_response(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}")
    path = [str(part) for part in first["loc"] if part != "body"]
    param = ".".join(path) or None
    return error_response(400, f"{param or 'body'}: {first['msg']}", param)


def envelope(kind, request_id, model_name):
    """What every response and chunk starts with."""
    return {"id": request_id, "object": kind, "created": int(time.time()), "model": model_name}


def chunk(kind, request_id, model_name, choice, usage=None):
    payload = {**envelope(kind, request_id, model_name), "choices": [choice] if choice else []}
    if usage:
        payload["usage"] = usage
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def usage(generation, reply):
    return {"prompt_tokens": len(generation.input_ids), "completion_tokens": reply.completion_tokens,
            "total_tokens": len(generation.input_ids) + reply.completion_tokens}


async def next_event(generation, request):
    """The generation's next event; a client that went away cancels it."""
    while True:
        try:
            return await asyncio.wait_for(generation.events.get(), timeout=0.5)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                raise asyncio.CancelledError from None


async def collect(generation, request):
    """The whole reply of a request that is not streamed."""
    try:
        kind, value = await next_event(generation, request)
        if kind == "error":
            raise ApiError(500, value, kind="server_error")
        return value
    finally:
        generation.cancel.set()


async def stream(generation, request, kind, request_id, model_name, include_usage):
    """Server-sent events in OpenAI's chunk format, ending with data: [DONE]."""
    chat = kind == "chat.completion.chunk"

    def choice(text, finish_reason=None):
        body = {"delta": {"content": text} if text is not None else {}} if chat else {"text": text or ""}
        return {"index": 0, **body, "logprobs": None, "finish_reason": finish_reason}
    try:
        if chat:
            yield chunk(kind, request_id, model_name, {**choice(""), "delta": {"role": "assistant", "content": ""}})
        while True:
            event, value = await next_event(generation, request)
            if event == "text":
                yield chunk(kind, request_id, model_name, choice(value))
            elif event == "error":
                yield f"data: {json.dumps({'error': {'message': value, 'type': 'server_error'}})}\n\n"
                return
            else:
                yield chunk(kind, request_id, model_name, choice(None, value.finish_reason))
                if include_usage:
                    yield chunk(kind, request_id, model_name, None, usage(generation, value))
                yield "data: [DONE]\n\n"
                return
    finally:
        generation.cancel.set()


def make_app(server: Server):
    app = FastAPI(title="zhwiki-llm", docs_url=None, redoc_url=None)
    page = PAGE.read_text(encoding="utf-8")

    @app.exception_handler(ApiError)
    async def api_error(_, exc: ApiError):
        return error_response(exc.status, exc.message, exc.param, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_, exc: RequestValidationError):
        return validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return page

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(server.models), "busy": server.worker.busy,
                "queued": len(server.worker.waiting), "auth": bool(server.api_key), **server.worker.counts}

    @app.get("/v1/models")
    async def models(request: Request):
        server.check_key(request)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": server.created,
                                            "owned_by": "zhwiki-llm"} for name in server.models]}

    async def respond(request, body, input_ids, kind, message):
        generation = server.generation(body, input_ids, asyncio.get_running_loop())
        server.worker.submit(generation)
        request_id = f"{'chatcmpl' if message else 'cmpl'}-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(stream(generation, request, f"{kind}.chunk" if message else kind, request_id,
                                            body.model, include_usage), media_type="text/event-stream")
        reply = await collect(generation, request)
        choice = {"index": 0, "logprobs": None, "finish_reason": reply.finish_reason,
                  **({"message": {"role": "assistant", "content": reply.text}} if message else {"text": reply.text})}
        return {**envelope(kind, request_id, body.model), "choices": [choice], "usage": usage(generation, reply)}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatRequest):
        server.check_key(request)
        return await respond(request, body, server.chat_ids(body), "chat.completion", True)

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest):
        server.check_key(request)
        return await respond(request, body, server.completion_ids(body), "text_completion", False)

    return app


def add_arguments(ap):
    ap.add_argument("models", type=Path, nargs="+", help="Hugging Face model directories, e.g. results/sft_model")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 serves other machines too")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key", help="require this key as 'Authorization: Bearer KEY' on /v1/*")
    ap.add_argument("--threads", type=int, help="CPU threads for generation (default: PyTorch's)")
    ap.add_argument("--max-queue", type=int, default=32, help="requests that may wait; more answer 503")
    ap.add_argument("--max-batch", type=int, default=16, help="requests generated together in one batch")
    ap.add_argument("--max-messages", type=int, default=Limits.max_messages)
    ap.add_argument("--max-prompt-chars", type=int, default=Limits.max_prompt_chars)
    ap.add_argument("--max-tokens", type=int, default=Limits.max_tokens, help="the largest max_tokens allowed")


def run(args, progress_stream):
    import uvicorn
    if args.threads:
        torch.set_num_threads(args.threads)
    limits = Limits(args.max_messages, args.max_prompt_chars, args.max_tokens)
    server = Server(args.models, limits, args.max_queue, args.max_batch, args.api_key)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        log.warning("serving on %s without --api-key: anyone who reaches this port can use the models", args.host)
    uvicorn.run(make_app(server), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    stage_cli("serve", __doc__, add_arguments, run)
