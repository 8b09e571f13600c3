"""The worker pool behind the web server (nanochat.scripts.chat_web), without HTTP: engines that concurrent
requests share, one generation per worker at a time, each in a thread of its own so that the event loop keeps
serving. The thread that runs a generation hands its worker back when the generation ends, so nothing a
client does (going away cancels its request) can keep it; /health counts workers that stall.
"""

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from nanochat.engine import Engine, decode_stream

STALL_S = 300.0  # a worker this long without a new token will not end its generation (no prefill takes so long)
log = logging.getLogger("nanochat.web")


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
    finish_reason: str = "stop"  # "length": max_tokens, or the positions the model has, ended it


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


class GenerationFailed(RuntimeError):
    """A worker's generation raised (its traceback is in the server's log)."""


class WorkerPool:
    """Engines waiting for requests. A request takes one; the thread that runs its generation hands it back
    when the generation ends, so nothing a client does (going away cancels its request) can keep it."""

    def __init__(self, engines: list[Engine], devices: list[str], stall_s: float = STALL_S):
        self.engines, self.devices, self.stall_s = engines, devices, stall_s
        self.free: asyncio.Queue = asyncio.Queue()  # binds to the server's event loop on first use
        for i in range(len(engines)):
            self.free.put_nowait(i)
        self.progress: dict[int, float] = {}  # busy worker -> when it last started or wrote a token
        self.stats = {"requests": 0, "active": 0, "tokens": 0, "started": time.time()}

    def prompt(self, conversation: list[dict]) -> list[int]:
        """The tokens the reply follows; PromptTooLong if they leave the model no position for it."""
        engine = self.engines[0]  # every worker holds a copy of the same model
        ids = engine.tokenizer.render_for_completion(conversation)
        engine.room(len(ids))
        return ids

    def stalled(self) -> int:
        """Busy workers without a new token for stall_s seconds: generations that will not end (a hung device)."""
        now = time.monotonic()
        return sum(now - last > self.stall_s for last in list(self.progress.values()))

    async def generate(self, prompt: list[int], sampling: Sampling, outcome: Outcome) -> AsyncGenerator[str]:
        """The reply's text in pieces of whole characters, until the model ends it, a stop string or the token
        limit (max_tokens, or the positions the model has left); GenerationFailed if the generation raised."""
        limit = min(sampling.max_tokens, self.engines[0].room(len(prompt)))
        outcome.prompt_tokens = len(prompt)
        worker = outcome.worker = await self.free.get()
        # No await until the thread runs: from here on only the thread's `finally` gives the worker back. (An
        # await here, or in this generator's own `finally`, is cancelled when the client goes away.)
        self.stats["requests"] += 1
        self.stats["active"] += 1
        self.progress[worker] = time.monotonic()
        engine, loop = self.engines[worker], asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()  # text, then None or the exception that ended the generation
        cancel = threading.Event()

        def run() -> None:  # in a thread: the event loop keeps serving other requests
            end = None
            try:
                tokens = engine.reply(prompt, limit, sampling.temperature, sampling.top_k, sampling.top_p,
                                      sampling.seed)
                for piece in decode_stream(engine.tokenizer, tokens):  # a piece per token
                    outcome.completion_tokens += 1
                    self.progress[worker] = time.monotonic()
                    if cancel.is_set():
                        break
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
            except Exception as error:  # noqa: BLE001 - the client is told; the worker serves the next request
                log.exception("generation failed on worker %d", worker)
                end = error
            finally:
                loop.call_soon_threadsafe(self._ended, worker, outcome, pieces, end)

        threading.Thread(target=run, daemon=True).start()
        scan = StopScan(sampling.stops)
        try:
            while isinstance(item := await pieces.get(), str):
                if text := scan.feed(item):
                    yield text
                if scan.stopped:
                    return
            if item is not None:
                raise GenerationFailed(f"the generation failed ({type(item).__name__}); the server's log has "
                                       "the details") from item
            if text := scan.flush():
                yield text
            if outcome.completion_tokens >= limit:
                outcome.finish_reason = "length"
        finally:
            cancel.set()  # the reply is complete, or nobody reads it: the thread stops at its next token

    def _ended(self, worker: int, outcome: Outcome, pieces: asyncio.Queue, end: Exception | None) -> None:
        """On the event loop, when a generation's thread ends: the worker back in the pool."""
        pieces.put_nowait(end)
        self.stats["tokens"] += outcome.completion_tokens
        self.stats["active"] -= 1
        del self.progress[worker]
        self.free.put_nowait(worker)


async def started(pieces: AsyncGenerator[str]) -> AsyncGenerator[str]:
    """The same pieces with the first already awaited: a generation that fails before it has written
    anything raises here, while the response can still be a JSON error rather than a stream."""
    first = await anext(pieces, None)

    async def resumed() -> AsyncGenerator[str]:
        async with aclosing(pieces):
            if first is not None:
                yield first
            async for piece in pieces:
                yield piece

    return resumed()
