"""Upstream nanochat at 92d63d4 (../shared/anchors), the oracle of the 2026 recipe's tests, imported beside ours.

Both packages are called `nanochat`, so `upstream("gpt")` loads upstream's nanochat/gpt.py, and the upstream
modules it imports (nanochat.common, nanochat.optim, ...), while `nanochat` names upstream's folder, then files
them as `upstream_92d63d4.<name>` and puts our package back. Upstream picks its compute dtype at import
(common.COMPUTE_DTYPE from NANOCHAT_DTYPE): float32 by default, as ours on a CPU; `dtype="bfloat16"` loads a
second copy (`upstream_92d63d4_bfloat16.<name>`) that computes as upstream does on a GPU. Upstream functions
decorated with torch.compile run eagerly under `eager()` (the tests need no compiler).
A test that asks for upstream skips, saying so, where ../shared/anchors is missing.
"""

import contextlib
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

UPSTREAM_2026 = Path(__file__).resolve().parent.parent.parent / "shared" / "anchors" / "nanochat-92d63d4"
PREFIX = "upstream_92d63d4"  # + "_<dtype>" for a dtype other than float32


def _ours(name: str) -> bool:
    return name == "nanochat" or name.startswith("nanochat.")


def upstream(name: str, oracle: str = "2026 recipe", dtype: str = "float32") -> ModuleType:
    """Upstream 92d63d4's nanochat.<name> computing in `dtype`, loaded once per process; skips the test (naming
    `oracle`) without it."""
    prefix = PREFIX if dtype == "float32" else f"{PREFIX}_{dtype}"
    if f"{prefix}.{name}" in sys.modules:
        return sys.modules[f"{prefix}.{name}"]
    folder = UPSTREAM_2026 / "nanochat"
    if not (folder / f"{name}.py").is_file():
        pytest.skip(f"upstream nanochat 92d63d4 not found at {UPSTREAM_2026}: the {oracle} oracle needs "
                    "../shared/anchors")
    saved = {key: sys.modules.pop(key) for key in [k for k in sys.modules if _ours(k)]}
    package = ModuleType("nanochat")
    package.__path__ = [str(folder)]  # `nanochat.x` is upstream's folder while its modules import each other
    sys.modules["nanochat"] = package
    for key in [k for k in sys.modules if k.startswith(prefix + ".")]:  # upstream modules loaded before: shared
        sys.modules["nanochat" + key[len(prefix):]] = sys.modules[key]
    env = os.environ.get("NANOCHAT_DTYPE")
    os.environ["NANOCHAT_DTYPE"] = dtype  # read once, when upstream's common.py is imported
    try:
        importlib.import_module(f"nanochat.{name}")
    finally:
        if env is None:
            del os.environ["NANOCHAT_DTYPE"]
        else:
            os.environ["NANOCHAT_DTYPE"] = env
        for key in [k for k in sys.modules if _ours(k)]:
            module = sys.modules.pop(key)
            if key != "nanochat":
                sys.modules[prefix + key[len("nanochat"):]] = module
        sys.modules.update(saved)
    return sys.modules[f"{prefix}.{name}"]


@contextlib.contextmanager
def eager():
    """Upstream's torch.compile-decorated functions run as plain Python (no compiler needed)."""
    with torch._dynamo.config.patch(disable=True):
        yield
