"""Chat with a trained model in the browser (FastAPI + uvicorn).

    python -m nanochat.scripts.chat_web                       # the SFT model of ./.nanochat on http://0.0.0.0:8000
    python -m nanochat.scripts.chat_web -i mid --port 8001

GET /                   the chat page
POST /chat/completions  {"messages": [{"role": "user", "content": "..."}], "temperature", "top_k", "max_tokens"}
                        answered as server-sent events: data: {"token": "..."} ... then data: {"done": true}
GET /v1/models, POST /v1/chat/completions
                        OpenAI's chat completions API, streamed or not: messages (system, user, assistant),
                        temperature, top_p, max_tokens (or max_completion_tokens), stop, seed, stream, and
                        top_k (extra_body); the model is "nanochat-<source>". Any OpenAI client works:
                        OpenAI(base_url="http://localhost:8000/v1", api_key="none")
GET /health, /stats     liveness, and what the workers have done

Requests are served by a pool of workers, each with its own copy of the model (one per GPU on a
multi-GPU node, --workers on a CPU); a request waits for a free worker, so concurrent requests never
share generation state. Inputs are limited as upstream's server limits them; violations get a 422
(/v1: a 400 in OpenAI's error format) naming the limit.
"""

import argparse
import asyncio
import dataclasses
import importlib.resources
import json
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Literal

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, model_validator

from nanochat import layout
from nanochat.checkpoint import find_model, load_model
from nanochat.engine import Engine, decode_stream
from nanochat.tokenizer import Tokenizer

MAX_MESSAGES, MAX_MESSAGE_CHARS, MAX_TOTAL_CHARS = 500, 8000, 32000
MAX_STOPS = 4  # stop strings per request, as OpenAI's API allows


def check_conversation(messages: list[dict]) -> None:
    """The limits every route puts on a conversation (upstream's server's), as the ValueError a 4xx names."""
    for message in messages:
        if len(message["content"]) > MAX_MESSAGE_CHARS:
            raise ValueError(f"a message's content has {len(message['content'])} characters, more than "
                             f"{MAX_MESSAGE_CHARS}")
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
    seed: int | None = None

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


@dataclasses.dataclass
class Sampling:
    max_tokens: int = 512
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 1.0
    seed: int = 42
    stops: list[str] = dataclasses.field(default_factory=list)  # the reply ends before the first


@dataclasses.dataclass
class Outcome:
    """How a generation went, filled in as it runs."""
    worker: int = -1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "length": max_tokens ended it


class StopScan:
    """Text up to the first stop string, piece by piece: what could be the start of one is held back."""

    def __init__(self, stops: list[str]):
        self.stops, self.pending, self.stopped = stops, "", False

    def feed(self, piece: str) -> str:
        self.pending += piece
        found = [i for stop in self.stops if (i := self.pending.find(stop)) >= 0]
        if found:
            self.stopped = True
            text, self.pending = self.pending[:min(found)], ""
            return text
        held = max((k for stop in self.stops for k in range(1, len(stop)) if self.pending.endswith(stop[:k])),
                   default=0)
        text, self.pending = self.pending[:len(self.pending) - held], self.pending[len(self.pending) - held:]
        return text

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text


class WorkerPool:
    """Engines waiting for requests; a request takes one and gives it back when its generation has ended."""

    def __init__(self, engines: list, devices: list[str]):
        self.engines, self.devices = engines, devices
        self.free: asyncio.Queue = asyncio.Queue()  # binds to the server's event loop on first use
        for i in range(len(engines)):
            self.free.put_nowait(i)
        self.stats = {"requests": 0, "active": 0, "tokens": 0, "started": time.time()}

    async def generate(self, conversation: list[dict], sampling: Sampling, outcome: Outcome) -> AsyncIterator[str]:
        """The reply's text in pieces of whole characters, until the model ends it, max_tokens or a stop
        string. The worker is given back only once its thread has stopped, also when the client went away."""
        worker = outcome.worker = await self.free.get()
        self.stats["requests"] += 1
        self.stats["active"] += 1
        loop, pieces, cancel = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()
        engine = self.engines[worker]

        def counted(tokens: Iterator[int]) -> Iterator[int]:
            for token in tokens:
                outcome.completion_tokens += 1
                yield token

        def run() -> None:  # in a thread: the event loop keeps serving other requests
            try:
                ids = engine.tokenizer.render_for_completion(conversation)
                outcome.prompt_tokens = len(ids)
                tokens = engine.reply(ids, sampling.max_tokens, sampling.temperature, sampling.top_k,
                                      sampling.top_p, sampling.seed)
                for piece in decode_stream(engine.tokenizer, counted(tokens)):
                    if cancel.is_set():
                        break
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, None)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        scan = StopScan(sampling.stops)
        try:
            while (piece := await pieces.get()) is not None:
                if text := scan.feed(piece):
                    yield text
                if scan.stopped:
                    break
            else:
                if text := scan.flush():
                    yield text
                if outcome.completion_tokens >= sampling.max_tokens:
                    outcome.finish_reason = "length"
        finally:
            cancel.set()
            await asyncio.to_thread(thread.join)
            self.stats["tokens"] += outcome.completion_tokens
            self.stats["active"] -= 1
            self.free.put_nowait(worker)


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def create_app(pool: WorkerPool, source: str) -> FastAPI:
    app = FastAPI(title="nanochat")
    page = importlib.resources.files("nanochat.scripts").joinpath("ui.html").read_text()
    model_id, created = f"nanochat-{source}", int(time.time())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        if not request.url.path.startswith("/v1/"):  # the page's route: FastAPI's own 422
            return await request_validation_exception_handler(request, error)
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"][1:]) or None
        return openai_error(400, f"{param or 'body'}: {first['msg']}", param)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.post("/chat/completions")
    async def chat(request: ChatRequest):
        sampling = Sampling(request.max_tokens, request.temperature, request.top_k)

        async def events() -> AsyncIterator[str]:
            outcome = Outcome()
            async for text in pool.generate([m.model_dump() for m in request.messages], sampling, outcome):
                yield f"data: {json.dumps({'token': text, 'worker': outcome.worker})}\n\n"
            yield f"data: {json.dumps({'done': True})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

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
        conversation = request.conversation()

        def usage() -> dict:
            return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
                    "total_tokens": outcome.prompt_tokens + outcome.completion_tokens}

        if not request.stream:
            text = "".join([piece async for piece in pool.generate(conversation, sampling, outcome)])
            return {**head, "object": "chat.completion", "usage": usage(), "choices": [{
                "index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": outcome.finish_reason}]}

        def chunk(delta: dict, finish_reason: str | None = None) -> str:
            body = {**head, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return f"data: {json.dumps(body)}\n\n"

        async def chunks() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            async for text in pool.generate(conversation, sampling, outcome):
                yield chunk({"content": text})
            yield chunk({}, outcome.finish_reason)
            if (request.stream_options or {}).get("include_usage"):
                yield f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage()})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "source": source, "workers": len(pool.engines),
                "free_workers": pool.free.qsize()}

    @app.get("/stats")
    async def stats() -> dict:
        return {**pool.stats, "uptime_s": round(time.time() - pool.stats["started"], 1),
                "workers": [{"id": i, "device": d} for i, d in enumerate(pool.devices)]}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--source", choices=tuple(layout.CHECKPOINTS), default="sft", help="which model")
    parser.add_argument("--base_dir", type=Path, default=Path(".nanochat"), help="the workflow's base_dir")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--workers", type=int, default=0, help="model copies (default: one per GPU, else 1)")
    args = parser.parse_args(argv)
    folder = find_model(args.base_dir, args.source)
    tokenizer = Tokenizer.load(args.base_dir / layout.TOKENIZER / "tokenizer.json")
    gpus = torch.cuda.device_count()
    devices = [f"cuda:{i}" for i in range(gpus)] if gpus else ["cpu"] * (args.workers or 1)
    devices = devices[:args.workers] if args.workers and gpus else devices
    engines = [Engine(load_model(folder, device)[0], tokenizer) for device in devices]
    print(f"nanochat web: {args.source} model from {folder}, {len(engines)} worker(s) on {sorted(set(devices))}; "
          f"open http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(create_app(WorkerPool(engines, devices), args.source), host=args.host, port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
