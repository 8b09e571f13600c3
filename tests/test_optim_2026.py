"""The 2026 recipe's optimizers (torch's fused AdamW with upstream's per-group settings, and our Muon's groups
with "beta2") against upstream 92d63d4's MuonAdamW (../shared/anchors), fp32: the same parameters after 1 and 10
steps from the same state, with the learning rate, Muon momentum and weight decay changed per step as the
trainer does. Also: a sharded step (nanochat.sharding, 2 gloo processes) and a resume from per-parameter state
give the unsharded, uninterrupted parameters."""

import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import oracle_2026
from conftest import REPO
from nanochat.compute import Compute
from nanochat.gpt import GPT, GPTConfig
from nanochat.muon import POLAR_EXPRESS, Muon, gram_quintics, quintic_iteration
from nanochat.sharding import ParameterShards

# A depth-3 model's parameters as upstream's GPT.setup_optimizer groups them (n_embd 64, 4 query and 2 kv heads,
# value embeddings on layers 0 and 2); names are ours, only the shapes and groups matter here.
N_EMBD, VOCAB = 64, 128
MATRIX_SHAPES = {"c_q": (64, 64), "c_k": (32, 64), "c_v": (32, 64), "attn_proj": (64, 64), "c_fc": (256, 64),
                 "mlp_proj": (64, 256)}
SHAPES = {**{f"h{i}_{name}": shape for i in range(3) for name, shape in MATRIX_SHAPES.items()},
          "h0_ve_gate": (2, 12), "h2_ve_gate": (2, 12),
          "lm_head": (VOCAB, N_EMBD), "wte": (VOCAB, N_EMBD), "ve0": (VOCAB, 32), "ve2": (VOCAB, 32),
          "resid_lambdas": (3,), "x0_lambdas": (3,), "smear_gate": (1, 24), "smear_lambda": (1,),
          "backout_lambda": (1,)}
MATRICES = [name for name in SHAPES if name.startswith("h")]
SCALE = (N_EMBD / 768) ** -0.5  # upstream's AdamW LR scale by model width
ADAMW_GROUPS = [  # upstream's setup_optimizer defaults: unembedding 0.004, embedding 0.2, scalar 0.5
    (["lm_head"], dict(lr=0.004 * SCALE, betas=(0.8, 0.96), eps=1e-10, weight_decay=0.01)),
    (["wte"], dict(lr=0.2 * SCALE, betas=(0.8, 0.995), eps=1e-10, weight_decay=0.001)),
    (["ve0", "ve2"], dict(lr=0.2 * SCALE * 0.5, betas=(0.8, 0.995), eps=1e-10, weight_decay=0.01)),
    (["resid_lambdas"], dict(lr=0.5 * 0.01, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.05)),
    (["x0_lambdas"], dict(lr=0.5, betas=(0.96, 0.95), eps=1e-10, weight_decay=0.0)),
    (["smear_gate", "smear_lambda", "backout_lambda"], dict(lr=0.2, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)),
]
MUON_GROUP = dict(lr=0.02, momentum=0.95, ns_steps=5, beta2=0.9, weight_decay=0.2)


def parameters() -> torch.nn.ParameterDict:
    """The same starting weights on every call: matrices at upstream's init scale, the rest O(1)."""
    gen = torch.Generator().manual_seed(0)
    return torch.nn.ParameterDict({name: torch.randn(shape, generator=gen) * (N_EMBD ** -0.5 if name in MATRICES else 1)
                                   for name, shape in SHAPES.items()})


def gradients(step: int, rank: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * step + rank + 1)
    return {name: torch.randn(shape, generator=gen) for name, shape in SHAPES.items()}


def schedule(step: int) -> tuple[float, float, float]:
    """(LR multiplier, Muon momentum, Muon weight decay) at `step`: a warmup, a warmdown, upstream's momentum
    ramp and its cosine weight decay, compressed into 10 steps."""
    return (min((step + 1) / 3, 1.0, (10 - step) / 5), 0.85 + 0.012 * step,
            0.2 * 0.5 * (1 + math.cos(math.pi * step / 10)))


def muon_shapes(names: list[str]) -> list[tuple[int, int]]:
    return sorted({SHAPES[n] for n in names})


def ours(params: torch.nn.ParameterDict, owns=lambda p: True) -> list[torch.optim.Optimizer]:
    """torch's fused AdamW with upstream's groups, our Muon with one 2026 group per matrix shape (sorted)."""
    adamw = torch.optim.AdamW([{"params": [params[n] for n in names if owns(params[n])], **hyper}
                               for names, hyper in ADAMW_GROUPS], fused=True)
    muon = Muon([{"params": [params[n] for n in MATRICES if SHAPES[n] == shape and owns(params[n])], **MUON_GROUP}
                 for shape in muon_shapes(MATRICES)])
    return [adamw, muon]


def scheduled(optimizers, step: int) -> None:
    """Set every group's hyperparameters for `step`, as the trainers do (upstream's base_train included)."""
    lrm, momentum, weight_decay = schedule(step)
    for opt in optimizers:
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * lrm
            if "beta2" in group and "betas" not in group:  # a Muon group (upstream: kind "muon")
                group["momentum"], group["weight_decay"] = momentum, weight_decay


def train(params: torch.nn.ParameterDict, optimizers, steps: range) -> None:
    for step in steps:
        for name, g in gradients(step).items():
            params[name].grad = g
        scheduled(optimizers, step)
        for opt in optimizers:
            opt.step()


@pytest.fixture
def upstream_optim(monkeypatch) -> types.ModuleType:
    """Upstream's nanochat/optim.py (tests/oracle_2026.py: NANOCHAT_DTYPE=float32), its two torch.compile'd steps
    replaced, for this test, by the functions they wrap (_torchdynamo_orig_callable): the same math, eager, no
    compiler. (torch._dynamo.config.disable cannot do it: with fullgraph=True a disabled compile raises.)"""
    module = oracle_2026.upstream("optim", "2026 optimizer")
    for name in ("adamw_step_fused", "muon_step_fused"):
        monkeypatch.setattr(module, name, getattr(module, name)._torchdynamo_orig_callable)
    return module


def upstream(module: types.ModuleType, params: torch.nn.ParameterDict) -> torch.optim.Optimizer:
    groups = [dict(kind="adamw", params=[params[n] for n in names], **hyper) for names, hyper in ADAMW_GROUPS]
    groups += [dict(kind="muon", params=[params[n] for n in MATRICES if SHAPES[n] == shape], **MUON_GROUP)
               for shape in muon_shapes(MATRICES)]
    return module.MuonAdamW(groups)


def assert_equal_up_to_rounding(mine: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], muon: set[str]
                                ) -> None:
    """Every tensor of `mine` as `theirs`' within a few fp32 roundings of its largest value (torch's AdamW divides
    by the bias correction's square root after the square root, upstream before; our Polar Express folds its sums
    into baddbmm). Measured over 10 steps: 2.7e-7 x the largest value at most (wte: 2 ulp; both sides are as far
    from an fp64 AdamW), Muon's 1.2e-7. In a Muon matrix, cautious weight decay's sign test (update x weight >= 0)
    may go the other way on the two sides where that product is at rounding level: at most 2 such elements (1 in
    ~6 million element-steps seen), each off by one step's decay at most (lr x wd x |weight|, < 1 % of the
    largest weight here)."""
    for name, expected in theirs.items():
        actual, expected = mine[name].detach(), expected.detach()
        largest = expected.abs().max().item()
        tolerance = 1e-6 * max(1.0, largest)
        off = int(((actual - expected).abs() > tolerance).sum())
        assert off <= (2 if name in muon else 0), f"{name}: {off} elements differ by more than {tolerance:.1e}"
        torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance + (0.01 * largest if name in muon else 0),
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("steps", [1, 10])
def test_2026_optimizers_equal_upstreams_muon_adamw(upstream_optim, monkeypatch, steps):
    """Every parameter, AdamW's groups and Muon's, after `steps` steps: upstream's, to fp32 rounding."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # fp32 everywhere (2026 Muon is fp32 on a CPU anyway)
    theirs, mine = parameters(), parameters()
    train(theirs, [upstream(upstream_optim, theirs)], range(steps))
    train(mine, ours(mine), range(steps))
    assert_equal_up_to_rounding(dict(mine), dict(theirs), set(MATRICES))
    assert not torch.equal(mine["h0_c_fc"], parameters()["h0_c_fc"])  # it did move


@pytest.mark.parametrize("seed", [0, 1])
def test_polar_express_through_the_gram_matrix_keeps_fp32_accuracy(seed):
    """A wide matrix's Polar Express on its Gram matrix, from X again after two steps, is within a small factor of
    the direct fp32 iteration's distance to an fp64 iteration, with singular values over four decades (all five
    steps on one Gram matrix, which squares the condition, are ~100x further)."""
    gen = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(4, 64, 64, generator=gen, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(4, 256, 64, generator=gen, dtype=torch.float64))[0]
    G = U @ torch.diag_embed(torch.logspace(0, -4, 64, dtype=torch.float64).expand(4, 64)) @ V.mT
    X = G / (G.norm(dim=(-2, -1), keepdim=True) * 1.01)
    exact = quintic_iteration(X, POLAR_EXPRESS)
    direct = (quintic_iteration(X.float(), POLAR_EXPRESS).double() - exact).abs().max()
    gram = (quintic_iteration(X.float(), POLAR_EXPRESS, gram=True).double() - exact).abs().max()
    assert gram <= 4 * direct
    assert (gram_quintics(X.float(), POLAR_EXPRESS).double() - exact).abs().max() > 20 * direct


def test_2026_resume_from_per_parameter_state_equals_uninterrupted():
    """Optimizer state copied by parameter name into fresh optimizers (as a step checkpoint restores it) continues
    exactly as if never interrupted."""
    straight = parameters()
    train(straight, ours(straight), range(6))
    first, second = parameters(), parameters()
    before = ours(first)
    train(first, before, range(3))
    after = ours(second)
    with torch.no_grad():
        for name in SHAPES:
            second[name].copy_(first[name])
    for old, new in zip(before, after):
        for p_old, p_new in zip((p for g in old.param_groups for p in g["params"]),
                                (p for g in new.param_groups for p in g["params"])):
            new.state[p_new] = {k: v.clone() for k, v in old.state[p_old].items()}
        for g_old, g_new in zip(old.param_groups, new.param_groups):
            g_new["initial_lr"] = g_old["initial_lr"]
    assert set(after[1].state[second["h0_c_fc"]]) == {"momentum_buffer", "second_momentum_buffer"}
    assert after[1].state[second["h0_c_fc"]]["second_momentum_buffer"].shape == (256, 1)  # tall: one per row
    assert after[1].state[second["h0_c_k"]]["second_momentum_buffer"].shape == (1, 64)  # wide: one per column
    train(second, after, range(3, 6))
    for name in SHAPES:
        assert torch.equal(second[name], straight[name]), name


# A depth-3 2026 model (value embeddings on layers 0 and 2), and upstream's optimizer settings
MODEL_SHAPE = dict(sequence_len=64, vocab_size=200, n_layer=3, n_head=4, n_kv_head=2, n_embd=128)
SETTINGS = dict(unembedding_lr=0.004, embedding_lr=0.3, matrix_lr=0.02, weight_decay=0.2, scalar_lr=0.5)


def model_2026() -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**MODEL_SHAPE, recipe="2026"))
    model.init_weights()
    return model


def model_gradients(model: torch.nn.Module, step: int, rank: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * step + rank + 1)
    return {name: torch.randn(p.shape, generator=gen) for name, p in model.named_parameters()}


def block_matrices(model: GPT) -> set[str]:
    return {name for name, _ in model.transformer.h.named_parameters(prefix="transformer.h")}


def test_2026_model_optimizers_equal_upstreams_setup_optimizer(upstream_optim, monkeypatch):
    """Our GPT(recipe "2026").setup_optimizers against upstream's GPT.setup_optimizer on the same weights: the
    same groups, so the same parameters after 10 steps of the same gradients (by parameter name) with the
    trainer's per-step changes."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    up = oracle_2026.upstream("gpt", "2026 optimizer")
    mine = model_2026()
    theirs = up.GPT(up.GPTConfig(**MODEL_SHAPE))
    theirs.load_state_dict(mine.state_dict(), strict=True)
    runs = [(mine, mine.setup_optimizers(**SETTINGS)), (theirs, [theirs.setup_optimizer(**SETTINGS)])]
    for step in range(10):
        grads = model_gradients(mine, step)
        for model, optimizers in runs:
            for name, p in model.named_parameters():
                p.grad = grads[name].to(p.dtype)
            scheduled(optimizers, step)
            for opt in optimizers:
                opt.step()
    assert_equal_up_to_rounding(dict(mine.named_parameters()), dict(theirs.named_parameters()), block_matrices(mine))


def shard_worker(rank: int, world: int, init_file: str, out: str) -> None:
    """One process of a sharded run of the 2026 model: its share of the optimizer state (setup_optimizers' owns),
    its own gradients, ParameterShards' step."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = model_2026()
    shards = ParameterShards(model, Compute(torch.device("cpu"), rank, rank, world))
    optimizers = model.setup_optimizers(**SETTINGS, owns=shards.owns)
    for step in range(4):
        for name, g in model_gradients(model, step, rank).items():
            model.get_parameter(name).grad = g
        scheduled(optimizers, step)
        shards.step(optimizers, grad_clip=0.0)
    if rank == 0:
        torch.save({name: p.detach() for name, p in model.named_parameters()}, out)
    dist.destroy_process_group()


def test_2026_sharded_step_equals_unsharded(tmp_path):
    """Two gloo processes, each stepping its share of the 2026 model's parameters with its share of the state
    (Muon's shape groups split between them, some empty on one), end where one process stepping everything on the
    mean gradients does."""
    out = tmp_path / "sharded.pt"
    code = ("import sys; sys.path[:0] = [{tests!r}, {repo!r}]; import test_optim_2026 as t; "
            "t.shard_worker({rank}, 2, {init!r}, {out!r})")
    procs = [subprocess.Popen([sys.executable, "-c", code.format(tests=str(Path(__file__).parent), repo=str(REPO),
                                                                rank=rank, init=str(tmp_path / "init"), out=str(out))],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), "\n".join(outputs)
    model = model_2026()
    optimizers = model.setup_optimizers(**SETTINGS)
    for step in range(4):
        per_rank = [model_gradients(model, step, rank) for rank in range(2)]
        for name, p in model.named_parameters():
            p.grad = (per_rank[0][name] + per_rank[1][name]).div(2)
        scheduled(optimizers, step)
        for opt in optimizers:
            opt.step()
    assert_equal_up_to_rounding(torch.load(out), dict(model.named_parameters()), block_matrices(model))
