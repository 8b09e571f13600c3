"""The 2026 recipe's horizon and schedules against upstream 92d63d4 (../shared/anchors), for depths 4 to 26 at
ratios 8 and 12, and a few runs with other settings.

The oracle is upstream's own scripts/base_train.py, run top to bottom in a subprocess (upstream's folder first
on sys.path, so its `nanochat` package is the one imported) for each configuration, and stopped by its own
gradient-accumulation assert before the first step: --device-batch-size=3 makes 3 x 2048 tokens per micro-batch,
which no power-of-2 total batch size is a multiple of. By then the script has computed everything these tests
compare: its parameter counts, the automatic batch size, the learning-rate scale, the scaled weight decay, the
number of iterations, and it has defined get_lr_multiplier, get_muon_momentum and get_weight_decay, which the
runner evaluates at every step. Three things of upstream's environment are stood in for, none of which enters
these figures: the tokenizer (tiktoken is not installed here; only its vocabulary size, 32,768, is used), the
model's storage (torch.nn.Module.to_empty leaves the weights on the meta device: counts and FLOPs come from
shapes; a d26 run would otherwise allocate 6.7 GB), and the data (two small shards for the loader's first batch).

Ours take upstream's parameter counts as their inputs (as the trainer passes our model's, which the model's
own oracle compares with upstream's), and must give exactly upstream's numbers.
"""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from nanochat import scaling
from nanochat.training import Schedule

UPSTREAM = REPO.parent / "shared" / "anchors" / "nanochat-92d63d4"

# Runs upstream's base_train.py once per configuration; writes one JSON record per configuration.
RUNNER = r'''
import json, os, sys, types
upstream, out, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, upstream)
for name in ("tiktoken", "rustbpe"):  # imported by upstream's tokenizer module, not used here
    sys.modules[name] = types.ModuleType(name)
import torch
import nanochat.tokenizer
torch.nn.Module.to_empty = lambda self, *, device, recurse=True: self  # the weights stay on the meta device

class Vocabulary:  # upstream's tokenizer interface, with the 2026 vocabulary size
    def get_vocab_size(self): return 32768
    def get_bos_token_id(self): return 0
    def encode(self, texts, prepend=None, num_threads=None): return [[prepend] + [1] * 99 for _ in texts]

nanochat.tokenizer.get_tokenizer = Vocabulary
nanochat.tokenizer.get_token_bytes = lambda device="cpu": torch.ones(32768, dtype=torch.int32)
path = os.path.join(upstream, "scripts", "base_train.py")
code = compile(open(path).read(), path, "exec")
records = []
for flags in runs:
    sys.argv = [path, "--device-type=cpu", "--device-batch-size=3", *flags]
    g = {"__name__": "__main__", "__file__": path}
    try:
        exec(code, g)
        raise RuntimeError(f"upstream's base_train did not stop before training ({flags})")
    except AssertionError as err:
        if "must be a multiple of" not in str(err):
            raise
    steps = range(g["num_iterations"])
    records.append({
        "flags": flags, "counts": g["param_counts"], "reference_counts": g["d12_ref"].num_scaling_params(),
        "flops_per_token": g["num_flops_per_token"], "total_batch_size": g["total_batch_size"],
        "lr_scale": g["batch_lr_scale"], "weight_decay": g["weight_decay_scaled"],
        "num_iterations": g["num_iterations"],
        "lr": [g["get_lr_multiplier"](s) for s in steps], "momentum": [g["get_muon_momentum"](s) for s in steps],
        "muon_weight_decay": [g["get_weight_decay"](s) for s in steps]})
with open(out, "w") as f:
    json.dump(records, f)
'''

UPSTREAM_DEFAULTS = dict(warmup_steps=40, warmdown_ratio=0.65, final_lr_frac=0.05, weight_decay=0.28,
                         total_batch_size=-1, num_iterations=-1, target_flops=-1.0, target_param_data_ratio=12.0)
RUNS = [{"depth": d, "target_param_data_ratio": r} for r in (8.0, 12.0) for d in range(4, 27)] + [
    {"depth": 8, "target_param_data_ratio": 12.0, "total_batch_size": 2 ** 18},  # a batch size set
    {"depth": 10, "target_param_data_ratio": 12.0, "target_flops": 1e17},  # a FLOPs budget
    {"depth": 6, "target_param_data_ratio": 20.0, "num_iterations": 300, "warmup_steps": 5, "warmdown_ratio": 0.3,
     "final_lr_frac": 0.1, "weight_decay": 0.1},  # steps set; the momentum ramp overlaps the warmdown
]


def flags(run: dict) -> list[str]:
    return [f"--{key.replace('_', '-')}={value}" for key, value in run.items()]


@pytest.fixture(scope="module")
def upstream_runs(tmp_path_factory) -> list[tuple[dict, dict]]:
    """(our settings, upstream's record) per run of RUNS."""
    if not (UPSTREAM / "scripts" / "base_train.py").is_file():
        pytest.skip(f"upstream nanochat 92d63d4 not found at {UPSTREAM}: the 2026 horizon oracle needs "
                    "../shared/anchors")
    base = tmp_path_factory.mktemp("upstream_base")
    (base / "base_data_climbmix").mkdir()
    for i in range(2):  # a training and a validation shard for the loader's first batch
        pq.write_table(pa.table({"text": [f"document {j}" for j in range(50)]}),
                       base / "base_data_climbmix" / f"shard_{i:05d}.parquet")
    out = base / "records.json"
    subprocess.run([sys.executable, "-c", RUNNER, str(UPSTREAM), str(out), json.dumps([flags(r) for r in RUNS])],
                   check=True, capture_output=True, env={**os.environ, "NANOCHAT_BASE_DIR": str(base)}, timeout=600)
    return [({**UPSTREAM_DEFAULTS, **run}, record) for run, record in zip(RUNS, json.loads(out.read_text()),
                                                                           strict=True)]


def test_batch_size_lr_and_weight_decay_scaling_and_steps_equal_upstreams(upstream_runs):
    auto_batches = set()
    for run, theirs in upstream_runs:
        ours = scaling.horizon_2026(
            scaling.scaling_params(theirs["counts"]), scaling.scaling_params(theirs["reference_counts"]),
            theirs["flops_per_token"], num_iterations=run["num_iterations"], target_flops=run["target_flops"],
            target_param_data_ratio=run["target_param_data_ratio"], total_batch_size=run["total_batch_size"],
            weight_decay=run["weight_decay"])
        assert ours == scaling.Horizon(theirs["num_iterations"], theirs["total_batch_size"], theirs["lr_scale"],
                                       theirs["weight_decay"]), run
        if run["total_batch_size"] == -1:
            auto_batches.add(ours.total_batch_size)
    assert len(auto_batches) >= 3  # the automatic batch size changes with depth in these runs


def test_schedules_equal_upstreams_at_every_step(upstream_runs):
    for run, theirs in upstream_runs:
        schedule = Schedule(theirs["num_iterations"], run["warmdown_ratio"], run["warmup_steps"],
                            run["final_lr_frac"], recipe="2026", weight_decay=theirs["weight_decay"])
        steps = range(theirs["num_iterations"])
        assert [schedule.lr(s) for s in steps] == theirs["lr"], run
        assert [schedule.muon_momentum(s) for s in steps] == theirs["momentum"], run
        assert [schedule.muon_weight_decay(s) for s in steps] == theirs["muon_weight_decay"], run


def test_course_schedule_is_unchanged():
    """Today's numbers (upstream 48abd7d's schedule without warmup): constant, then linear to 0; Muon momentum
    0.85 to 0.95 over 300 steps; no Muon weight decay."""
    schedule = Schedule(10, 0.2)
    assert [schedule.lr(s) for s in range(10)] == [1.0] * 9 + [0.5]
    assert [Schedule(4, 1.0).lr(s) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [Schedule(5, 0.0).lr(s) for s in range(5)] == [1.0] * 5
    assert [schedule.muon_momentum(s) for s in (0, 150, 300, 1000)] == [0.85, 0.5 * 0.85 + 0.5 * 0.95, 0.95, 0.95]
    assert schedule.muon_weight_decay(3) is None


def test_course_steps_are_todays():
    kwargs = dict(num_iterations=-1, target_flops=-1.0, target_param_data_ratio=20.0, total_batch_size=524_288)
    assert scaling.course_num_steps(560_988_160, 3.5e9, **kwargs) == round(20 * 560_988_160 / 524_288)
    assert scaling.course_num_steps(1000, 3.5e9, **kwargs) == 1  # at least one step
    assert scaling.course_num_steps(1000, 3.5e9, **{**kwargs, "num_iterations": 7}) == 7
    assert scaling.course_num_steps(1000, 1e6, **{**kwargs, "target_flops": 1e15}) == round(1e15 / (1e6 * 524_288))
