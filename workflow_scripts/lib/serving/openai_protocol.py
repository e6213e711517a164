"""The OpenAI API as the server speaks it: request bodies, checked to the ranges the model and torch
accept, and the JSON of responses, stream chunks, logprobs and errors.

Every field a request may hold is either served or refused with a 400 that names it: a field this
server does not know is refused too (extra="forbid"), so nothing a client asks for is silently
ignored. Extensions, as vLLM's: `repetition_penalty`, `ignore_eos`.
"""
import json
import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from workflow_scripts.lib.serving.utf8_guard import BYTE_OF_CHAR

MAX_N = 16
MAX_TOP_LOGPROBS = 20
NOT_FOR_TOOLS = "these models are not trained to call tools; send the conversation as text"


class ApiError(Exception):
    """An OpenAI-style error response: status, message, the request field it is about."""

    def __init__(self, status, message, param=None, kind="invalid_request_error", headers=None, code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.headers, self.code = headers, code


def no_surrogates(text: str):
    """JSON may carry a lone surrogate ("\\ud800"), which is no character and cannot be encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate (\\ud800-\\udfff), which is not a character") from None
    return text


Text = Annotated[str, AfterValidator(no_surrogates)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(Strict):
    type: Literal["text"]
    text: Text


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    tool_calls: Any = None  # refused: named here to say why
    tool_call_id: Any = None

    def text(self):
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def template_role(self):
        """developer is OpenAI's newer name for system."""
        return "system" if self.role == "developer" else self.role


class StreamOptions(Strict):
    include_usage: bool = False


class ResponseFormat(Strict):
    type: Literal["text"]  # json_object and json_schema need constrained decoding, which is not built


class Sampling(Strict):
    """The settings both endpoints take."""
    model: Text
    max_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0, le=2)  # None (as some clients send): the default
    top_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    stop: Text | list[Text] | None = None
    seed: int | None = Field(None, ge=-2**63, lt=2**64)  # torch's generators take this range (negatives mapped)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    user: Text | None = None  # logged with the request, as OpenAI uses it: to tell end users apart
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None

    @model_validator(mode="after")
    def refuse_tools(self):
        for name in ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls"):
            if getattr(self, name) is not None:
                raise ApiError(400, f"{name}: {NOT_FOR_TOOLS}", name)
        return self

    def stops(self):
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def check_chat(self):
        if self.max_tokens == 0:
            raise ApiError(400, "max_tokens: must be at least 1", "max_tokens")
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError(400, "top_logprobs: needs logprobs: true", "top_logprobs")
        for n, message in enumerate(self.messages):
            if message.role == "tool" or message.tool_calls is not None or message.tool_call_id is not None:
                raise ApiError(400, f"messages.{n}: {NOT_FOR_TOOLS}", f"messages.{n}")
            if message.content is None and message.role != "assistant":
                raise ApiError(400, f"messages.{n}.content: a {message.role} message needs content",
                               f"messages.{n}.content")
        return self

    def asked_tokens(self):
        return self.max_completion_tokens or self.max_tokens

    def top_logprobs_asked(self):
        """None: no logprobs; else how many alternatives each token lists."""
        return (self.top_logprobs or 0) if self.logprobs else None


TokenIds = list[Annotated[int, Field(ge=0)]]


class CompletionRequest(Sampling):
    prompt: Text | list[Text] | TokenIds | list[TokenIds]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    best_of: int | None = Field(None, ge=1)
    suffix: Any = None

    @model_validator(mode="after")
    def check_completion(self):
        if self.suffix is not None:
            raise ApiError(400, "suffix: insertion is not supported by these models", "suffix")
        if self.best_of not in (None, self.n):
            raise ApiError(400, "best_of: only best_of equal to n (or none) is supported", "best_of")
        if self.max_tokens == 0 and not self.echo:
            raise ApiError(400, "max_tokens: 0 only with echo (the prompt's logprobs alone)", "max_tokens")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ApiError(400, "prompt: an empty list", "prompt")
        return self

    def asked_tokens(self):
        return self.max_tokens

    def top_logprobs_asked(self):
        return self.logprobs

    def prompts(self):
        """The prompts, each a string or a list of token ids."""
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return list(self.prompt)


def error_body(message, param=None, kind="invalid_request_error", code=None):
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def envelope(kind, request_id, model_name):
    """What every response and chunk starts with."""
    return {"id": request_id, "object": kind, "created": int(time.time()), "model": model_name}


def sse(payload):
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def token_bytes(tokenizer, token):
    """A token's own bytes: a byte-level BPE token's characters each stand for one byte."""
    piece = tokenizer.convert_ids_to_tokens(token)
    if piece and all(char in BYTE_OF_CHAR for char in piece):
        return bytes(BYTE_OF_CHAR[char] for char in piece)
    return tokenizer.decode([token]).encode("utf-8")


def token_text(tokenizer, token):
    return token_bytes(tokenizer, token).decode("utf-8", errors="replace")


def chat_logprobs(tokenizer, entries):
    """Chat's logprobs object for TokenLogprob entries."""
    def item(token, logprob):
        return {"token": token_text(tokenizer, token), "logprob": logprob,
                "bytes": list(token_bytes(tokenizer, token))}
    return {"content": [{**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
                        for e in entries]}


def completion_logprobs(tokenizer, entries, offset=0):
    """The completions endpoint's logprobs object; text_offset counts characters from `offset`."""
    tokens = [token_text(tokenizer, e.token) for e in entries]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [None if e.logprob is None else {token_text(tokenizer, t): lp for t, lp in e.top}
                             for e in entries],
            "text_offset": offsets}
