"""Serve trained models over the OpenAI API, with a chat page at /.

    python -m workflow_scripts.serving.serve results/sft_model [results/base_model ...] [--port 8000]

Endpoints: POST /v1/chat/completions and POST /v1/completions (streaming or not), GET /v1/models,
GET /v1/models/{id}, GET /health, GET / (the chat page). A model's id is its directory's name. Any
OpenAI client works: base_url http://127.0.0.1:8000/v1, any api_key unless --api-key is set; so
does lm-eval's local-completions (echo and prompt logprobs, token-id prompts). What is served and
what is refused: lib/serving/openai_protocol.py and README's serve section. Requests join the running
batch between decode steps, each with its own settings (continuous batching,
lib/serving/continuous_batching.py; on the demo model and 2 cores 16 clients get about 5 times the
tokens/s of one: benchmarks/results/serve_throughput.md); more than --max-queue waiting answer 503 with Retry-After.
Binds 127.0.0.1; give --host 0.0.0.0 and --api-key to serve beyond this machine, and
--cors-origin for a chat front-end on another origin.
"""
import asyncio
import os
import secrets
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from workflow_scripts.lib.serving.continuous_batching import RowSampling
from workflow_scripts.lib.serving.generation import DEFAULTS, chat_prompt_ids, completion_prompt_ids, ends_turns
from workflow_scripts.lib.serving.model_notes import answered_questions
from workflow_scripts.lib.serving.openai_protocol import (ApiError, ChatRequest, CompletionRequest, Sampling,
                                                          chat_logprobs, completion_logprobs, envelope, error_body, sse)
from workflow_scripts.lib.serving.serving_worker import Choice, Generation, Worker
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.training.models import load_causal_lm

PAGE = Path(__file__).resolve().parent / "web" / "chat.html"
MAX_LOGIT_BIAS = 300  # OpenAI's bound on logit_bias entries


@dataclass
class Limits:
    max_messages: int = 64
    max_prompt_chars: int = 16000
    max_tokens: int = 1024
    max_stops: int = 4


class ClientGone(Exception):
    """The client hung up before its reply was complete."""


class Server:
    """The models, the limits and the worker behind the HTTP endpoints."""

    def __init__(self, model_dirs, limits, max_queue, max_batch, api_key):
        self.models, self.notes = {}, {}
        for model_dir in model_dirs:
            if model_dir.name in self.models:
                raise StageError(f"{model_dir}: two models named {model_dir.name}; serve directories of distinct names")
            model, tokenizer = load_causal_lm(model_dir)
            if torch.cuda.is_available():
                model.to(torch.bfloat16)
            self.models[model_dir.name] = (model, tokenizer)
            self.notes[model_dir.name] = {"chat": ends_turns(model, tokenizer),
                                          "examples": answered_questions(model_dir)}
            log.info("serving %s as %s on %s", model_dir, model_dir.name, model.device)
        self.limits, self.api_key, self.max_batch = limits, api_key, max_batch
        self.worker = Worker(self.models, max_queue, max_batch, self.stop)
        self.created = int(time.time())

    @staticmethod
    def stop(err):
        log.critical("the generation thread stopped (%r): no request could be answered, so the server stops", err)
        os.kill(os.getpid(), signal.SIGTERM)

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

    def model_card(self, name):
        model, _ = self.models[name]
        # chat and examples are this server's own: what the chat page tells a user about the model.
        return {"id": name, "object": "model", "created": self.created, "owned_by": "zhwiki-llm",
                "max_model_len": getattr(model.config, "max_position_embeddings", None), **self.notes[name]}

    def generation(self, body: Sampling, prompts, loop, echo=False):
        """The request's Generation: n choices for each of `prompts` [(token ids, text, ids the server
        put before the text)], checked against the model."""
        model, tokenizer = self.model(body.model)
        vocab = model.config.vocab_size
        if len(prompts) * body.n > self.max_batch:
            raise ApiError(400, f"{len(prompts)} prompts × n {body.n} is more than the {self.max_batch} replies this "
                                "server generates at once (--max-batch)", "n")
        stops = body.stops()
        if len(stops) > self.limits.max_stops or any(len(s) > 64 for s in stops):
            raise ApiError(400, f"stop takes at most {self.limits.max_stops} strings of at most 64 characters",
                           "stop")
        context = getattr(model.config, "max_position_embeddings", None)
        sampling = self.sampling(body, vocab, echo)
        choices = []
        for p, (ids, text, prefix) in enumerate(prompts):
            max_tokens = self.max_tokens(body, len(ids), context)
            for k in range(body.n):
                choices.append(Choice(p * body.n + k, ids, max_tokens, choice_sampling(sampling, k, max_tokens, body),
                                      text, prefix))
        prompt_tokens = sum(len(ids) for ids, _, _ in prompts)
        return Generation(body.model, choices, stops, body.stream, prompt_tokens, loop)

    @staticmethod
    def sampling(body, vocab, echo):
        bias = {}
        if len(body.logit_bias or {}) > MAX_LOGIT_BIAS:
            raise ApiError(400, f"logit_bias: {len(body.logit_bias)} entries; at most {MAX_LOGIT_BIAS}", "logit_bias")
        for key, value in (body.logit_bias or {}).items():
            if not key.isdigit() or int(key) >= vocab or not -100 <= value <= 100:
                raise ApiError(400, f"logit_bias: {key!r}: {value} is not a token id below {vocab} with a bias "
                                    "from -100 to 100", "logit_bias")
            bias[int(key)] = value
        def setting(name):
            value = getattr(body, name)
            return DEFAULTS[name] if value is None else value
        return RowSampling(setting("temperature"), setting("top_p"), setting("repetition_penalty"),
                           body.presence_penalty, body.frequency_penalty, bias, 0, body.seed,
                           body.top_logprobs_asked(), echo and body.top_logprobs_asked() is not None)

    def max_tokens(self, body: Sampling, prompt_tokens, context):
        """The request's max_tokens, checked; left out, what fits the context up to the default."""
        asked = body.asked_tokens()
        room = context - prompt_tokens if context else self.limits.max_tokens
        if asked and asked > self.limits.max_tokens:
            raise ApiError(400, f"max_tokens is {asked}; this server allows at most {self.limits.max_tokens}",
                           "max_tokens")
        if room < (1 if asked is None else asked):
            raise ApiError(400, f"the prompt is {prompt_tokens} tokens; with max_tokens {asked or 1} that is more "
                                f"than the model's context of {context} tokens",
                           "messages" if isinstance(body, ChatRequest) else "prompt", code="context_length_exceeded")
        return asked if asked is not None else min(DEFAULTS["max_tokens"], self.limits.max_tokens, room)

    def chat_ids(self, body: ChatRequest):
        _, tokenizer = self.model(body.model)
        if not tokenizer.chat_template:
            raise ApiError(400, f"model {body.model!r} has no chat template; use /v1/completions", "model")
        if len(body.messages) > self.limits.max_messages:
            raise ApiError(400, f"{len(body.messages)} messages; this server takes at most "
                                f"{self.limits.max_messages}", "messages")
        messages = [{"role": m.template_role(), "content": m.text()} for m in body.messages]
        self.check_length(sum(len(m["content"]) for m in messages), "messages")
        return [(chat_prompt_ids(tokenizer, messages), "", 0)]

    def completion_prompts(self, body: CompletionRequest):
        """(token ids, text, ids put before the text) of each prompt: a string after the end-of-text
        id (as every training document starts), a list of ids as it is (lm-eval sends those)."""
        model, tokenizer = self.model(body.model)
        prompts = []
        for prompt in body.prompts():
            if isinstance(prompt, str):
                self.check_length(len(prompt), "prompt")
                prompts.append((completion_prompt_ids(tokenizer, prompt), prompt, 1))
            elif not prompt or max(prompt) >= model.config.vocab_size:
                raise ApiError(400, f"prompt: token ids must be a non-empty list below the vocabulary's "
                                    f"{model.config.vocab_size}", "prompt")
            else:
                prompts.append((list(prompt), tokenizer.decode(prompt), 0))
        return prompts

    def check_length(self, chars, param):
        if chars > self.limits.max_prompt_chars:
            raise ApiError(400, f"the {param} holds {chars} characters; this server takes at most "
                                f"{self.limits.max_prompt_chars}", param)


def choice_sampling(sampling, k, max_tokens, body):
    """The k-th of n choices' sampling: seeded choices get consecutive seeds, so that they differ;
    ignore_eos holds the end of text back for all of max_tokens."""
    seed = None if sampling.seed is None else (sampling.seed + k) % 2**64
    return RowSampling(**{**vars(sampling), "seed": seed, "min_tokens": max_tokens if body.ignore_eos else 0})


def error_response(status, message, param=None, kind="invalid_request_error", headers=None, code=None):
    return JSONResponse(error_body(message, param, kind, code), status, headers=headers)


def is_type_tag(part):
    """pydantic names the member of a union it tried in an error's location ('str', 'list[int]')."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "dict", "list") or "[" in part)


def validation_error(exc: RequestValidationError):
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return error_response(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}")
    param = ".".join(str(part) for part in first["loc"][1:] if not is_type_tag(part)) or None
    return error_response(400, f"{param or 'body'}: {first['msg']}", param)


async def events(generation, request):
    """The generation's events until every choice is done, in lists of those that arrived together
    (a stream writes each list at once); ClientGone when the client hangs up."""
    remaining, queue = len(generation.choices), generation.events
    try:
        while remaining:
            try:
                async with asyncio.timeout(0.5):  # not wait_for: it makes a task per event
                    arrived = [await queue.get()]
            except TimeoutError:
                if await request.is_disconnected():
                    raise ClientGone from None
                continue
            while not queue.empty():
                arrived.append(queue.get_nowait())
            if errors := [event for event in arrived if event[0] == "error"]:
                raise ApiError(500, errors[0][2], kind="server_error")
            remaining -= sum(event[0] == "done" for event in arrived)
            yield arrived
    finally:
        generation.cancel.set()


def make_app(server: Server, cors_origins=()):
    app = FastAPI(title="zhwiki-llm", docs_url=None, redoc_url=None)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    page = PAGE.read_text(encoding="utf-8")

    @app.exception_handler(ApiError)
    async def api_error(_, exc: ApiError):
        return error_response(exc.status, exc.message, exc.param, exc.kind, exc.headers, exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_, exc: RequestValidationError):
        return validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, exc: StarletteHTTPException):
        if exc.detail == "There was an error parsing the body":  # FastAPI's words for bytes that are not UTF-8
            return error_response(400, "the request body is not JSON in UTF-8")
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_, exc: Exception):
        log.error("request failed: %r", exc)
        return error_response(500, f"the server failed on this request: {exc!r}", kind="server_error")

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return page

    @app.get("/health")
    async def health():
        alive = server.worker.thread.is_alive()
        return JSONResponse({"status": "ok" if alive else "error", "models": list(server.models),
                             "busy": server.worker.busy(), "queued": len(server.worker.waiting),
                             "auth": bool(server.api_key), **server.worker.counts}, 200 if alive else 503)

    @app.get("/v1/models")
    async def models(request: Request):
        server.check_key(request)
        return {"object": "list", "data": [server.model_card(name) for name in server.models]}

    @app.get("/v1/models/{name}")
    async def model(name: str, request: Request):
        server.check_key(request)
        server.model(name)
        return server.model_card(name)

    async def respond(request, body, prompts, chat):
        generation = server.generation(body, prompts, asyncio.get_running_loop(), echo=getattr(body, "echo", False))
        server.worker.submit(generation)
        request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        if body.user:
            log.info("%s from user %s", request_id, body.user)
        _, tokenizer = server.models[body.model]
        reply = (ChatReply if chat else CompletionReply)(tokenizer, generation, request_id, body)
        if body.stream:
            return StreamingResponse(reply.chunks(request), media_type="text/event-stream")
        try:
            return await reply.whole(request)
        except ClientGone:
            log.info("%s: the client hung up; its generation stopped", request_id)
            return Response(status_code=499)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatRequest):
        server.check_key(request)
        return await respond(request, body, server.chat_ids(body), chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest):
        server.check_key(request)
        return await respond(request, body, server.completion_prompts(body), chat=False)

    return app


class Reply:
    """A response being written: whole, or as server-sent events in OpenAI's chunk format."""
    kind = ""

    def __init__(self, tokenizer, generation, request_id, body):
        self.tokenizer, self.generation, self.request_id, self.body = tokenizer, generation, request_id, body
        self.logprobs = body.top_logprobs_asked() is not None

    def head(self, kind):
        return envelope(kind, self.request_id, self.body.model)

    async def whole(self, request):
        replies = {}
        async for arrived in events(self.generation, request):
            replies.update({index: value for kind, index, value, _ in arrived if kind == "done"})
        choices = [self.choice(self.generation.choices[index], replies[index]) for index in sorted(replies)]
        return {**self.head(self.kind), "choices": choices, "usage": self.usage(replies)}

    async def chunks(self, request):
        kind, replies, opened = f"{self.kind}.chunk", {}, set()
        try:
            async for arrived in events(self.generation, request):
                yield "".join(self.messages(arrived, kind, replies, opened))
            if self.body.stream_options and self.body.stream_options.include_usage:
                yield sse({**self.head(kind), "choices": [], "usage": self.usage(replies)})
            yield "data: [DONE]\n\n"
        except ClientGone:
            log.info("%s: the client hung up; its generation stopped", self.request_id)
        except asyncio.CancelledError:  # Starlette ends the stream of a client that hung up
            log.info("%s: the client hung up; its generation stopped", self.request_id)
            raise
        except ApiError as err:
            yield sse(error_body(err.message, kind=err.kind))

    def messages(self, arrived, kind, replies, opened):
        """The server-sent events of the events that arrived together."""
        for event, index, value, entries in arrived:
            if index not in opened:  # once the choice's prompt is read (echo shows it)
                opened.add(index)
                if (opening := self.opening(self.generation.choices[index])) is not None:
                    yield sse({**self.head(kind), "choices": [opening]})
            finish = None
            if event == "done":
                replies[index], value, finish = value, "", value.finish_reason
            yield sse({**self.head(kind), "choices": [self.delta(index, value, entries, finish)]})

    def usage(self, replies):
        completion = sum(reply.completion_tokens for reply in replies.values())
        prompt = self.generation.prompt_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChatReply(Reply):
    kind = "chat.completion"

    def opening(self, choice):
        return {"index": choice.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}

    def delta(self, index, text, entries, finish_reason):
        logprobs = chat_logprobs(self.tokenizer, entries) if self.logprobs and entries else None
        return {"index": index, "delta": {"content": text} if text else {}, "logprobs": logprobs,
                "finish_reason": finish_reason}

    def choice(self, choice, reply):
        logprobs = chat_logprobs(self.tokenizer, choice.row.logprobs) if self.logprobs else None
        return {"index": choice.index, "message": {"role": "assistant", "content": reply.text}, "logprobs": logprobs,
                "finish_reason": reply.finish_reason}


class CompletionReply(Reply):
    """Completions; with echo the prompt comes first, and with logprobs its tokens' logprobs (of a
    string prompt, not of the end-of-text id the server puts before it)."""
    kind = "text_completion"

    def echoed(self, choice):
        """(text, logprob entries) of the prompt as echoed."""
        if not self.body.echo:
            return "", []
        text = choice.prompt_text
        return text, choice.row.prompt_logprobs[choice.implicit_prefix:]

    def opening(self, choice):
        if not self.body.echo:
            return None
        text, entries = self.echoed(choice)
        return {"index": choice.index, "text": text,
                "logprobs": completion_logprobs(self.tokenizer, entries) if self.logprobs else None,
                "finish_reason": None}

    def delta(self, index, text, entries, finish_reason):
        logprobs = completion_logprobs(self.tokenizer, entries) if self.logprobs and entries else None
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}

    def choice(self, choice, reply):
        text, entries = self.echoed(choice)
        logprobs = completion_logprobs(self.tokenizer, entries + choice.row.logprobs) if self.logprobs else None
        return {"index": choice.index, "text": text + reply.text, "logprobs": logprobs,
                "finish_reason": reply.finish_reason}


def add_arguments(ap):
    ap.add_argument("models", type=Path, nargs="+", help="Hugging Face model directories, e.g. results/sft_model")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 serves other machines too")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key", help="require this key as 'Authorization: Bearer KEY' on /v1/*")
    ap.add_argument("--cors-origin", action="append", default=[],
                    help="an origin whose pages may call the API (a chat front-end elsewhere); repeat for more, or *")
    # On 2 cores neither 1 nor 2 threads won steadily under 16 clients, and one client was faster at
    # 2 (benchmarks/results/serve_throughput.md). Hence PyTorch's default.
    ap.add_argument("--threads", type=int, help="CPU threads for generation (default: PyTorch's, all cores)")
    ap.add_argument("--max-queue", type=int, default=32, help="requests that may wait; more answer 503")
    ap.add_argument("--max-batch", type=int, default=16, help="replies generated together, per model")
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
    uvicorn.run(make_app(server, args.cors_origin), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    stage_cli("serve", __doc__, add_arguments, run)
