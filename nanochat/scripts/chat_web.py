"""Chat with a trained model in the browser (FastAPI + uvicorn).

    python -m nanochat.scripts.chat_web                       # the SFT model of ./.nanochat on http://127.0.0.1:8000
    python -m nanochat.scripts.chat_web -i mid --port 8001
    NANOCHAT_API_KEY=... python -m nanochat.scripts.chat_web --host 0.0.0.0   # open to the network, with a key

GET /                   the chat page (where the server has a key: /?key=<key>)
POST /chat/completions  {"messages": [{"role": "user", "content": "..."}], "temperature", "top_k", "max_tokens"}
                        answered as server-sent events: data: {"token": "..."} ... then data: {"done": true}
GET /v1/models, POST /v1/chat/completions
                        OpenAI's chat completions API, streamed or not: messages (system, user, assistant),
                        temperature, top_p, max_tokens (or max_completion_tokens), stop, seed, stream, and
                        top_k (extra_body); the model is "nanochat-<source>". Any OpenAI client works:
                        OpenAI(base_url="http://localhost:8000/v1", api_key="none")
GET /health             200 {"status": "ok", ...} while a worker can serve; 503 "unhealthy" when every worker
                        is stalled (busy without a new token for serving.STALL_S seconds: a hung generation)
GET /stats              what the workers have done

Requests are served by a pool of workers, each with its own copy of the model (one per GPU on a
multi-GPU node, --workers on a CPU); a request waits for a free worker, so concurrent requests never
share generation state. The thread that runs a generation hands its worker back when it ends, whatever
the client does (goes away midway: the generation stops at its next token) or the generation does (raises).

Errors are errors, each naming its cause, in OpenAI's format on /v1 and as {"detail": "..."} on the page's
route; none is a 200 with an empty reply:
- 413: a body over MAX_BODY_BYTES (1 MiB), refused before it is read (Content-Length, or counted as it comes);
- 400 (the page's route: 422): upstream's limits on the conversation (500 messages, 8,000 characters each,
  32,000 in all), content that is not valid Unicode, and any parameter out of its range;
- 400 context_length_exceeded: a prompt that leaves the model no position for its reply. Prompt and reply
  share the model's positions (Engine.context); the prompt is checked, in tokens, before generation, and
  max_tokens is cut to the positions left: a reply that ends there, or at max_tokens, has finish_reason
  "length". (OpenAI refuses a prompt + max_tokens over the context instead; here the clients' usual
  max_tokens would then refuse a long conversation that still has room for a reply.)
- 500: a generation that raised before anything was sent; once a stream has begun, its last event is
  an error, data: {"error": ...}, in place of the normal end ({"done": true}; /v1: finish_reason, [DONE]).

By default the server listens on 127.0.0.1 only. From another machine (a cluster node) use an SSH tunnel,
`ssh -N -L 8000:localhost:8000 node`, or open it with --host 0.0.0.0 and set a key (--api-key or, out of
the process list, NANOCHAT_API_KEY): every route but / and /health then needs `Authorization: Bearer <key>`,
what OpenAI clients send as their api_key (the page sends the ?key= of its address); else a 401.
"""

import argparse
import hmac
import importlib.resources
import json
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Literal

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, model_validator
from starlette import types as asgi
from starlette.exceptions import HTTPException

from nanochat import layout
from nanochat.checkpoint import find_model, load_model
from nanochat.common import is_utf8
from nanochat.engine import Engine, PromptTooLong
from nanochat.serving import GenerationFailed, Outcome, Sampling, WorkerPool, started
from nanochat.tokenizer import Tokenizer

MAX_MESSAGES, MAX_MESSAGE_CHARS, MAX_TOTAL_CHARS = 500, 8000, 32000
MAX_STOPS = 4  # stop strings per request, as OpenAI's API allows
MAX_BODY_BYTES = 1 << 20  # 32,000 characters take a few hundred KB even as JSON's \uXXXX escapes
TOO_LARGE = f"the body is over {MAX_BODY_BYTES} bytes"
OPEN_ROUTES = ("/", "/health")  # served without the API key: the page (it holds nothing) and liveness probes


def check_conversation(messages: list[dict]) -> None:
    """The limits every route puts on a conversation (upstream's server's), as the ValueError a 4xx names."""
    for message in messages:
        if len(message["content"]) > MAX_MESSAGE_CHARS:
            raise ValueError(f"a message's content has {len(message['content'])} characters, more than "
                             f"{MAX_MESSAGE_CHARS}")
        if not is_utf8(message["content"]):  # JSON's \ud800 escapes decode to lone surrogates, which no text has
            raise ValueError("a message's content is not valid Unicode (a lone surrogate such as \\ud800)")
    total = sum(len(m["content"]) for m in messages)
    if total > MAX_TOTAL_CHARS:
        raise ValueError(f"the messages have {total} characters in all, more than {MAX_TOTAL_CHARS}")
    if any(m["role"] == "system" for m in messages[1:]):
        raise ValueError("a system message may only come first")
    if messages[-1]["role"] != "user":
        raise ValueError("the last message must be the user's")


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)


class ChatRequest(BaseModel):
    """The page's own route: POST /chat/completions."""
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_k: int = Field(50, ge=1, le=200)
    max_tokens: int = Field(512, ge=1, le=4096)

    @model_validator(mode="after")
    def limits(self) -> "ChatRequest":
        check_conversation([m.model_dump() for m in self.messages])
        return self


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class OpenAIMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class OpenAIChatRequest(BaseModel):
    """OpenAI's chat completion request, the parameters a nanochat model has; others are ignored."""
    model: str
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, le=200)  # not OpenAI's (the client's extra_body); 0: no cut
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)  # OpenAI's newer name for max_tokens
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None  # {"include_usage": true}: a last chunk with the token counts
    n: int = Field(1, ge=1, le=1)  # one choice per request
    seed: int | None = Field(None, ge=-2 ** 63, lt=2 ** 63)  # OpenAI's range, which torch's generator takes

    @model_validator(mode="after")
    def limits(self) -> "OpenAIChatRequest":
        check_conversation(self.conversation())
        stops = self.stops()
        if len(stops) > MAX_STOPS or not all(stops):
            raise ValueError(f"stop: up to {MAX_STOPS} non-empty strings")
        return self

    def conversation(self) -> list[dict]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


def sse(body: dict | str) -> str:
    """One server-sent event."""
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n"


async def events(pieces: AsyncIterator[str], event: Callable[[str], dict], failure: Callable[[str], dict],
                 ending: Callable[[], Iterable[dict | str]]) -> AsyncIterator[str]:
    """Server-sent events: one per piece of the reply, then `ending`'s. A generation that fails midway ends
    the stream with `failure`'s event instead, so that no client takes a cut reply for a whole one."""
    try:
        async for text in pieces:
            yield sse(event(text))
    except GenerationFailed as error:
        yield sse(failure(str(error)))
        return
    for body in ending():
        yield sse(body)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error object."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status)


def is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def route_error(request: Request, status: int, message: str, param: str | None = None,
                code: str | None = None) -> JSONResponse:
    """An error in its route's format: OpenAI's under /v1, FastAPI's {"detail": message} on the others."""
    if is_openai(request):
        return openai_error(status, message, param, code)
    return JSONResponse({"detail": message}, status)


class Gate:
    """ASGI middleware, what a request must pass before its route sees it: the API key, where the server has
    one (every route but OPEN_ROUTES), and MAX_BODY_BYTES: by the declared Content-Length before anything
    is read, and counted as a chunked body comes (the route's read of it then ends in the 413)."""

    def __init__(self, app: asgi.ASGIApp, api_key: str | None):
        self.app, self.expected = app, api_key and b"Bearer " + api_key.encode()

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        # compare_digest takes as long however much of the key is right: a refusal's timing gives none of it away
        if (self.expected and scope["path"] not in OPEN_ROUTES
                and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected)):
            refusal = openai_error(401, "missing or wrong API key: send the header Authorization: Bearer <key>",
                                   code="invalid_api_key")
        elif int(headers.get(b"content-length", 0)) > MAX_BODY_BYTES:
            refusal = route_error(Request(scope), 413, TOO_LARGE)
        else:
            return await self.app(scope, counted(receive), send)
        await refusal(scope, receive, send)


def counted(receive: asgi.Receive) -> asgi.Receive:
    """`receive` that raises the 413 once the body has come to more than MAX_BODY_BYTES."""
    received = 0

    async def receive_counted() -> asgi.Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > MAX_BODY_BYTES:
            raise HTTPException(413, TOO_LARGE)
        return message

    return receive_counted


def create_app(pool: WorkerPool, source: str, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="nanochat")
    app.add_middleware(Gate, api_key=api_key)
    page = importlib.resources.files("nanochat.scripts").joinpath("ui.html").read_text()
    model_id, created = f"nanochat-{source}", int(time.time())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]  # its input is not echoed: it may not even be encodable (a lone surrogate)
        # the body's JSON does not parse: FastAPI's location is a character offset, not a parameter
        param = None if first["type"] == "json_invalid" else ".".join(str(part) for part in first["loc"][1:]) or None
        return route_error(request, 400 if is_openai(request) else 422, f"{param or 'body'}: {first['msg']}", param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:  # 413, an unknown route, ...
        return route_error(request, error.status_code, str(error.detail))

    @app.exception_handler(PromptTooLong)
    async def too_long(request: Request, error: PromptTooLong) -> JSONResponse:
        return route_error(request, 400, str(error), "messages", "context_length_exceeded")

    @app.exception_handler(GenerationFailed)
    async def failed(request: Request, error: GenerationFailed) -> JSONResponse:
        return route_error(request, 500, str(error))

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.post("/chat/completions")
    async def chat(request: ChatRequest) -> StreamingResponse:
        prompt = pool.prompt([m.model_dump() for m in request.messages])
        sampling, outcome = Sampling(request.max_tokens, request.temperature, request.top_k), Outcome()
        pieces = await started(pool.generate(prompt, sampling, outcome))
        return StreamingResponse(events(pieces, lambda text: {"token": text, "worker": outcome.worker},
                                        lambda message: {"error": message}, lambda: [{"done": True}]),
                                 media_type="text/event-stream")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                            "owned_by": "nanochat"}]}

    @app.post("/v1/chat/completions")
    async def openai_chat(request: OpenAIChatRequest):
        if request.model != model_id:
            return openai_error(404, f"model {request.model!r} does not exist; this server has {model_id!r}",
                                "model", "model_not_found")
        sampling = Sampling(request.max_completion_tokens or request.max_tokens or 512, request.temperature,
                            request.top_k, request.top_p,
                            random.randrange(2 ** 31) if request.seed is None else request.seed, request.stops())
        reply_id, outcome = f"chatcmpl-{uuid.uuid4().hex}", Outcome()
        head = {"id": reply_id, "created": int(time.time()), "model": model_id}
        pieces = pool.generate(pool.prompt(request.conversation()), sampling, outcome)

        def usage() -> dict:
            return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
                    "total_tokens": outcome.prompt_tokens + outcome.completion_tokens}

        if not request.stream:
            text = "".join([piece async for piece in pieces])
            return {**head, "object": "chat.completion", "usage": usage(), "choices": [{
                "index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": outcome.finish_reason}]}

        def chunk(delta: dict | None, finish_reason: str | None = None) -> dict:  # None: no choice (usage's)
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
            return {**head, "object": "chat.completion.chunk", "choices": choices}

        def ending() -> list[dict | str]:
            with_usage = (request.stream_options or {}).get("include_usage")
            return [chunk({}, outcome.finish_reason), *([{**chunk(None), "usage": usage()}] if with_usage else []),
                    "[DONE]"]

        async def chunks(reply: AsyncIterator[str]) -> AsyncIterator[str]:
            yield sse(chunk({"role": "assistant", "content": ""}))
            async for event in events(reply, lambda text: chunk({"content": text}),
                                      lambda message: error_body(500, message), ending):
                yield event

        return StreamingResponse(chunks(await started(pieces)), media_type="text/event-stream")

    @app.get("/health")
    async def health() -> JSONResponse:
        stalled = pool.stalled()
        healthy = stalled < len(pool.engines)
        return JSONResponse({"status": "ok" if healthy else "unhealthy", "source": source,
                             "workers": len(pool.engines), "free_workers": pool.free.qsize(),
                             "stalled_workers": stalled}, 200 if healthy else 503)

    @app.get("/stats")
    async def stats() -> dict:
        return {**pool.stats, "uptime_s": round(time.time() - pool.stats["started"], 1),
                "workers": [{"id": i, "device": d} for i, d in enumerate(pool.devices)]}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--source", choices=tuple(layout.CHECKPOINTS), default="sft", help="which model")
    parser.add_argument("--base_dir", type=Path, default=Path(".nanochat"), help="the workflow's base_dir")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: this machine only; 0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--workers", type=int, default=0, help="model copies (default: one per GPU, else 1)")
    parser.add_argument("--api-key", default=os.environ.get("NANOCHAT_API_KEY") or None,
                        help="require Authorization: Bearer <key> on every route but / and /health "
                             "(default: $NANOCHAT_API_KEY; none)")
    args = parser.parse_args(argv)
    folder = find_model(args.base_dir, args.source)
    tokenizer = Tokenizer.load(args.base_dir / layout.TOKENIZER / "tokenizer.json")
    gpus = torch.cuda.device_count()
    devices = [f"cuda:{i}" for i in range(gpus)] if gpus else ["cpu"] * (args.workers or 1)
    devices = devices[:args.workers] if args.workers and gpus else devices
    engines = [Engine(load_model(folder, device)[0], tokenizer) for device in devices]
    print(f"nanochat web: {args.source} model from {folder}, {len(engines)} worker(s) on {sorted(set(devices))}; "
          f"open http://{args.host}:{args.port}/{'?key=<the key>' if args.api_key else ''}", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: anyone who reaches {args.host}:{args.port} can use the model (no --api-key)", flush=True)
    uvicorn.run(create_app(WorkerPool(engines, devices), args.source, args.api_key), host=args.host,
                port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
