"""Chat with a trained model in the browser (FastAPI + uvicorn).

    python -m nanochat.scripts.chat_web                       # the SFT model of ./.nanochat on http://0.0.0.0:8000
    python -m nanochat.scripts.chat_web -i mid --port 8001

GET /                   the chat page
POST /chat/completions  {"messages": [{"role": "user", "content": "..."}], "temperature", "top_k", "max_tokens"}
                        answered as server-sent events: data: {"token": "..."} ... then data: {"done": true}
GET /health, /stats     liveness, and what the workers have done

Requests are served by a pool of workers, each with its own copy of the model (one per GPU on a
multi-GPU node, --workers on a CPU); a request waits for a free worker, so concurrent requests never
share generation state. Inputs are limited as upstream's server limits them; violations get a 422
naming the limit.
"""

import argparse
import asyncio
import importlib.resources
import json
import threading
import time
from pathlib import Path
from typing import Literal

import torch
import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field, model_validator

from nanochat import layout
from nanochat.checkpoint import find_model, load_model
from nanochat.engine import Engine, decode_stream
from nanochat.tokenizer import Tokenizer

MAX_MESSAGES, MAX_MESSAGE_CHARS, MAX_TOTAL_CHARS = 500, 8000, 32000


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)


class ChatRequest(BaseModel):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_k: int = Field(50, ge=1, le=200)
    max_tokens: int = Field(512, ge=1, le=4096)

    @model_validator(mode="after")
    def total_length(self) -> "ChatRequest":
        total = sum(len(m.content) for m in self.messages)
        if total > MAX_TOTAL_CHARS:
            raise ValueError(f"the messages have {total} characters in all, more than {MAX_TOTAL_CHARS}")
        if self.messages[-1].role != "user":
            raise ValueError("the last message must be the user's")
        return self


class WorkerPool:
    """Engines waiting for requests; a request takes one and gives it back when its stream ends."""

    def __init__(self, engines: list, devices: list[str]):
        self.engines, self.devices = engines, devices
        self.free: asyncio.Queue = asyncio.Queue()  # binds to the server's event loop on first use
        for i in range(len(engines)):
            self.free.put_nowait(i)
        self.stats = {"requests": 0, "active": 0, "tokens": 0, "started": time.time()}

    async def stream(self, request: ChatRequest):
        worker = await self.free.get()
        self.stats["requests"] += 1
        self.stats["active"] += 1
        loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
        engine = self.engines[worker]
        conversation = [m.model_dump() for m in request.messages]

        def generate() -> None:  # in a thread: the event loop keeps serving other requests
            try:
                ids = engine.tokenizer.render_for_completion(conversation)
                tokens = engine.reply(ids, request.max_tokens, request.temperature, request.top_k)
                for piece in decode_stream(engine.tokenizer, tokens):
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, None)

        threading.Thread(target=generate, daemon=True).start()
        try:
            while (piece := await pieces.get()) is not None:
                self.stats["tokens"] += 1
                if piece:  # whole characters only
                    yield f"data: {json.dumps({'token': piece, 'worker': worker})}\n\n"
            yield f"data: {json.dumps({'done': True})}\n\n"
        finally:
            self.stats["active"] -= 1
            self.free.put_nowait(worker)


def create_app(pool: WorkerPool, source: str) -> FastAPI:
    app = FastAPI(title="nanochat")
    page = importlib.resources.files("nanochat.scripts").joinpath("ui.html").read_text()

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.post("/chat/completions")
    async def chat(request: ChatRequest):
        return StreamingResponse(pool.stream(request), media_type="text/event-stream")

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
