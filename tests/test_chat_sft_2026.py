"""The 2026 recipe's SFT against upstream 92d63d4's scripts/chat_sft.py and tasks/ (../shared/anchors).

Upstream's batch generator (sft_data_generator_bos_bestfit) and learning-rate multiplier (get_lr_multiplier)
are functions inside its training script, which trains when imported: the tests compile just those two
function definitions out of the script's source (ast) and run them on the globals they read (args,
tokenizer, datasets), so the oracle is upstream's own code, not a re-implementation. Its tasks (TaskMixture,
SmolTalk, MMLU, GSM8K) are imported by path, their hub downloads replaced by tables of the same rows.
"""

import ast
import dataclasses
import importlib
import json
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nanochat.catalog import CATALOG, MIXTURES
from nanochat.chat_data import ENTRIES_2026, BestFitPadLoader, sft_mixture_2026
from nanochat.chat_train import PassSchedule, build_optimizers, warm_start
from nanochat.checkpoint import StepCheckpoints, load_model, save_final
from nanochat.compute import init_compute
from nanochat.gpt import GPT, GPTConfig
from nanochat.scripts.chat_sft import ChatSftSettings, resolved
from nanochat.tasks import chatterbot
from nanochat.tokenizer import Tokenizer
from oracle_2026 import UPSTREAM_2026, upstream

SCRIPT = UPSTREAM_2026 / "scripts" / "chat_sft.py"
GSM8K = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "gsm8k"
needs_upstream = pytest.mark.skipif(not SCRIPT.is_file(), reason=f"needs upstream nanochat 92d63d4 at {UPSTREAM_2026}")


def script_functions(namespace: dict, *names: str) -> dict:
    """Upstream's chat_sft.py functions `names`, defined (not run) with `namespace` as their globals."""
    tree = ast.parse(SCRIPT.read_text())
    defs = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    assert sorted(d.name for d in defs) == sorted(names)
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(SCRIPT), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def tok():
    words = [f"w{i}" for i in range(200)]
    return Tokenizer.train([" ".join(random.Random(i).choices(words, k=50)) for i in range(100)], vocab_size=300)


def conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """Conversations of 1 to 3 exchanges, from a few tokens to longer than a row of the tests."""
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(f"w{rng.randrange(200)}" for _ in range(rng.choice([1, 2, 4, 8, 30])))

    out = []
    for _ in range(n):
        turns = [{"role": role, "content": text()} for _ in range(rng.randint(1, 2)) for role in ("user", "assistant")]
        if rng.random() < 0.2:  # a python call and its output in the reply, whose output is not trained
            turns[-1]["content"] = [{"type": "text", "text": text()}, {"type": "python", "text": "2+2"},
                                    {"type": "python_output", "text": "4"}, {"type": "text", "text": text()}]
        out.append(turns)
    return out


class UpstreamTokenizer:
    """What upstream's generator asks of its tokenizer, answered by ours; conversations cut where ours are."""

    def __init__(self, tok: Tokenizer, T: int):
        self.tok, self.T = tok, T

    def get_bos_token_id(self) -> int:
        return self.tok.bos_id

    def render_conversation(self, conversation: dict) -> tuple[list[int], list[int]]:
        return self.tok.render_conversation(conversation["messages"], min(self.T + 1, 2048))


def upstream_generator(tok: Tokenizer, convs: list, B: int, T: int, num_iterations: int = -1) -> tuple:
    """Upstream's sft_data_generator_bos_bestfit("train") over `convs` at world size 1, and its globals."""
    g = {"torch": torch, "args": SimpleNamespace(max_seq_len=T, device_batch_size=B, num_iterations=num_iterations),
         "train_dataset": [{"messages": c} for c in convs], "val_dataset": None,
         "tokenizer": UpstreamTokenizer(tok, T), "ddp_rank": 0, "ddp_world_size": 1, "device_type": "cpu",
         "device": "cpu", "last_step": False, "approx_progress": 0.0, "current_epoch": 1}
    script_functions(g, "sft_data_generator_bos_bestfit")
    return g["sft_data_generator_bos_bestfit"]("train"), g


@needs_upstream
@pytest.mark.parametrize("B, T", [(4, 64), (3, 40)])
def test_best_fit_pad_batches_are_upstreams_token_for_token(tok, B, T):
    convs = conversations(150)
    ours = BestFitPadLoader(tok, convs, B, T, rows_per_step=B)
    theirs, _ = upstream_generator(tok, convs, B, T)
    padded = 0
    for _ in range(100):  # past the end of the mixture, into its second pass
        (x, y), (ux, uy) = ours.next_batch(), next(theirs)
        assert torch.equal(x, ux.long()) and torch.equal(y, uy)
        padded += int((x[:, -1] == tok.bos_id).sum())  # no conversation ends with <|bos|>: padding
    assert padded > 0 and (y == -1).any() and (y >= 0).any()  # rows were padded, targets masked and trained


@needs_upstream
@pytest.mark.parametrize("accum, warmup_ratio, final_lr_frac", [(1, 0.0, 0.0), (3, 0.0, 0.0), (2, 0.1, 0.05)])
def test_pass_length_and_learning_rates_are_upstreams(tok, accum, warmup_ratio, final_lr_frac):
    """Upstream's training loop, reduced to its clock: it fetches a micro-batch ahead, stops once a fetched
    one completes the mixture, and sets each step's rate from the mixture consumed by then."""
    B, T = 4, 64
    convs = conversations(300, seed=1)
    theirs, g = upstream_generator(tok, convs, B, T)
    g["args"].__dict__.update(warmup_ratio=warmup_ratio, warmdown_ratio=0.5, final_lr_frac=final_lr_frac)
    script_functions(g, "get_lr_multiplier", "get_muon_momentum")
    upstream_lrs, progress = [], 0.0
    next(theirs)
    while not g["last_step"]:
        for _ in range(accum):
            next(theirs)
            progress = max(progress, g["approx_progress"])
        upstream_lrs.append(g["get_lr_multiplier"](progress))

    loader = BestFitPadLoader(tok, convs, B, T, rows_per_step=B * accum)
    steps = loader.epoch_steps()
    schedule = PassSchedule(steps, loader.progress, warmup_ratio, 0.5, final_lr_frac)
    assert steps == len(upstream_lrs) > 10
    assert [schedule.lr(step) for step in range(steps)] == upstream_lrs  # exactly: the same float operations
    assert abs(upstream_lrs[-1] - final_lr_frac) < 0.1  # decayed: the clock went round the mixture
    assert [schedule.muon_momentum(s) for s in range(500)] == [g["get_muon_momentum"](s) for s in range(500)]
    assert schedule.muon_weight_decay(0) is None  # Muon's stays at the 0 it was built with


def take(loader, n: int) -> list:
    return [loader.next_batch() for _ in range(n)]


def test_two_processes_take_the_rows_of_one_and_resume_on_any_number(tok):
    convs = conversations(120, seed=2)
    single = BestFitPadLoader(tok, convs, B=2, T=48, rows_per_step=8)  # 4 micro-batches per step
    ranks = [BestFitPadLoader(tok, convs, B=2, T=48, rows_per_step=8, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        together = take(ranks[0], 2) + take(ranks[1], 2)
        for (x1, y1), (x2, y2) in zip(take(single, 4), together):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    state = ranks[0].state_dict()
    assert state == ranks[1].state_dict() == {"steps": 3}
    resumed = BestFitPadLoader(tok, convs, B=2, T=48, rows_per_step=8, state=state)
    for (x1, y1), (x2, y2) in zip(take(resumed, 12), take(single, 12)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


# Upstream 92d63d4's tasks, with load_hub_dataset answered from rows in memory: (repo, subset, split) -> rows.
def upstream_tasks(hub: dict) -> dict[str, ModuleType]:
    """Upstream's tasks/common, smoltalk, mmlu and gsm8k, imported by path under `tasks` (ours is nanochat.tasks)
    with upstream's nanochat.common, their downloads replaced by `hub`."""
    if not (UPSTREAM_2026 / "tasks" / "common.py").is_file():
        pytest.skip(f"needs upstream nanochat 92d63d4's tasks at {UPSTREAM_2026}")
    common = upstream("common", "SFT mixture")
    saved = {k: sys.modules.pop(k) for k in [k for k in sys.modules if k == "tasks" or k.startswith("tasks.")]}
    ours = sys.modules["nanochat.common"]
    package = ModuleType("tasks")
    package.__path__ = [str(UPSTREAM_2026 / "tasks")]
    sys.modules.update({"tasks": package, "nanochat.common": common})
    try:
        modules = {name: importlib.import_module(f"tasks.{name}") for name in ("common", "smoltalk", "mmlu", "gsm8k")}
    finally:
        sys.modules["nanochat.common"] = ours
        for key in [k for k in sys.modules if k == "tasks" or k.startswith("tasks.")]:
            del sys.modules[key]
        sys.modules.update(saved)
    table = modules["common"].HubDataset
    for name in ("smoltalk", "mmlu", "gsm8k"):
        modules[name].load_hub_dataset = lambda repo, subset="default", split="train": table(
            pa.Table.from_pylist(hub[repo, subset, split]))
    return modules


def write_parquet(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "rows-00000-of-00001.parquet")


@needs_upstream
@pytest.mark.skipif(not (GSM8K / "train.jsonl").is_file(), reason="needs ../shared/data/gsm8k (real GSM8K)")
def test_hub_mixture_is_upstreams_task_mixture(tmp_path):
    """SmolTalk and MMLU rows made up (no offline copy), GSM8K's real ones: the same conversations in the same
    order as upstream's TaskMixture, for training and validation."""
    rng = random.Random(3)
    chats = [{"messages": ([{"role": "system", "content": f"be brief {i}"}] if i % 4 == 0 else [])
              + [{"role": "user", "content": f"hello {i}"}, {"role": "assistant", "content": f"hi {i}"}]}
             for i in range(400)]

    def mmlu(n: int) -> list[dict]:
        return [{"question": f"q{i}?", "subject": "x", "choices": [f"c{i}{k}" for k in "abcd"],
                 "answer": rng.randrange(4)} for i in range(n)]

    gsm8k = {split: [json.loads(line) for line in (GSM8K / f"{split}.jsonl").read_text().splitlines()]
             for split in ("train", "test")}
    hub = {("HuggingFaceTB/smol-smoltalk", "default", "train"): chats[:300],
           ("HuggingFaceTB/smol-smoltalk", "default", "test"): chats[300:],
           ("cais/mmlu", "all", "auxiliary_train"): mmlu(500), ("cais/mmlu", "all", "test"): mmlu(5300),
           ("openai/gsm8k", "main", "train"): gsm8k["train"], ("openai/gsm8k", "main", "test"): gsm8k["test"]}
    for entry, key in zip(ENTRIES_2026, [("HuggingFaceTB/smol-smoltalk", "default", "train"),
                                         ("cais/mmlu", "all", "auxiliary_train"), ("openai/gsm8k", "main", "train"),
                                         ("HuggingFaceTB/smol-smoltalk", "default", "test"),
                                         ("cais/mmlu", "all", "test"), ("openai/gsm8k", "main", "test")]):
        write_parquet(tmp_path / entry, hub[key])
    t = upstream_tasks(hub)
    train = t["common"].TaskMixture([t["smoltalk"].SmolTalk(split="train"),
                                     *[t["mmlu"].MMLU(subset="all", split="auxiliary_train") for _ in range(3)],
                                     *[t["gsm8k"].GSM8K(subset="main", split="train") for _ in range(4)]])
    val = t["common"].TaskMixture([t["smoltalk"].SmolTalk(split="test"),
                                   t["mmlu"].MMLU(subset="all", split="test", stop=5200),
                                   t["gsm8k"].GSM8K(subset="main", split="test", stop=420)])

    ours_train, ours_val, composition = sft_mixture_2026("hub", 3, 4, tmp_path)
    assert ours_train == [train[i]["messages"] for i in range(len(train))]
    assert ours_val == [val[i]["messages"] for i in range(len(val))]
    assert composition == {"smoltalk": 300, "mmlu_aux": 1500, "gsm8k_train": 4 * 7473, "smoltalk_test": 100,
                           "mmlu_test": 5200, "gsm8k_test": 420}


def upstream_defaults() -> dict:
    """The defaults of upstream's chat_sft.py flags, read from its parser.add_argument calls."""
    defaults = {}
    for node in ast.walk(ast.parse(SCRIPT.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            default = next(k.value for k in node.keywords if k.arg == "default")
            defaults[node.args[0].value.lstrip("-").replace("-", "_")] = eval(ast.unparse(default), {})  # 40*524288
    return defaults


@needs_upstream
def test_settings_resolve_to_upstreams_for_a_2026_base_model():
    base = {"model_config": {"recipe": "2026"}, "total_batch_size": 1_048_576,  # the automatic batch, as upstream's
            "settings": {"max_seq_len": 2048, "device_batch_size": 16, "total_batch_size": -1}}  # meta keeps it
    cfg = resolved(ChatSftSettings(), base)
    theirs = upstream_defaults()
    assert cfg.recipe == "2026" and (cfg.max_seq_len, cfg.device_batch_size, cfg.rows_per_step) == (2048, 16, 512)
    for name in ("init_lr_frac", "warmup_ratio", "warmdown_ratio", "final_lr_frac", "load_optimizer",
                 "mmlu_epochs", "gsm8k_epochs", "num_iterations"):
        assert getattr(cfg, name) == theirs[name], name
    assert theirs["max_seq_len"] is theirs["device_batch_size"] is theirs["total_batch_size"] is None  # inherited
    assert cfg.grad_clip == 0  # upstream's SFT never clips


def test_course_settings_resolve_to_todays_numbers():
    course = resolved(ChatSftSettings(), {"model_config": {}, "settings": {}})  # a model from before recipes
    assert dataclasses.asdict(course) == {
        **dataclasses.asdict(ChatSftSettings()), "recipe": "course", "max_seq_len": 2048, "device_batch_size": 4,
        "rows_per_step": 32, "init_lr_frac": 0.02, "warmdown_ratio": 1.0, "grad_clip": 1.0, "load_optimizer": 0}
    chosen = resolved(ChatSftSettings(recipe="course", rows_per_step=64), {"model_config": {"recipe": "2026"}})
    assert (chosen.recipe, chosen.rows_per_step, chosen.init_lr_frac) == ("course", 64, 0.02)


def base_run(folder: Path, seed: int, step: int) -> tuple[GPT, list]:
    """A tiny base model after `step` optimizer steps, with its step checkpoint under folder/steps/<seed>/."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_depth(1, vocab_size=64, sequence_len=16))
    model.init_weights()
    optimizers = model.setup_optimizers(0.2, 0.004, 0.02, 0.0)
    for _ in range(step):
        x = torch.randint(0, 64, (2, 16))
        model(x, x).backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
    meta = {"settings": {"embedding_lr": 0.2, "unembedding_lr": 0.004, "matrix_lr": 0.02, "weight_decay": 0.0},
            "model_config": model.export_config(), "history": []}
    StepCheckpoints(folder / "steps" / f"run{seed}", init_compute("cpu")).save(step, model, optimizers, {}, meta)
    return model, optimizers


def test_warm_start_takes_the_optimizer_state_of_the_parents_own_step_checkpoint(tmp_path):
    other, _ = base_run(tmp_path, seed=1, step=2)  # another run at the same step: other weights, not taken
    parent, parent_optimizers = base_run(tmp_path, seed=2, step=2)
    save_final(tmp_path, parent, {"settings": {}, "model_config": parent.export_config(), "step": 2})
    model, meta = load_model(tmp_path)
    lrs = {"embedding_lr": 0.2, "unembedding_lr": 0.004, "matrix_lr": 0.02, "weight_decay": 0.0}
    optimizers = build_optimizers(model, 0.8, lrs, None)
    rates = [group["lr"] for opt in optimizers for group in opt.param_groups]
    assert warm_start(model, optimizers, tmp_path, meta, torch.device("cpu")) == tmp_path / "steps/run2/step_000002"
    names = dict(parent.named_parameters())
    for opt, theirs in zip(optimizers, parent_optimizers):
        for name, p in model.named_parameters():
            if p in opt.state:
                saved = theirs.state[names[name]]
                assert opt.state[p].keys() == saved.keys()
                assert all(torch.equal(opt.state[p][k], saved[k]) for k in saved)
    assert sum(len(opt.state) for opt in optimizers) == len(names)
    assert [group["lr"] for opt in optimizers for group in opt.param_groups] == rates  # this stage's rates stay
    assert rates[0] == pytest.approx(0.8 * 0.2 * (64 / 768) ** -0.5)

    with pytest.raises(SystemExit, match="no step checkpoint of the parent model"):
        warm_start(model, optimizers, tmp_path, {**meta, "step": 3}, torch.device("cpu"))


@needs_upstream
def test_optimizer_groups_start_at_upstreams_sft_rates():
    """Upstream's SFT: setup_optimizer at the base run's rates and weight decay 0, then every group's rate x0.8."""
    shape = dict(sequence_len=64, vocab_size=300, n_layer=4, n_head=4, n_kv_head=2, n_embd=128)
    model = GPT(GPTConfig(**shape, recipe="2026", window_pattern="SSSL"))
    up = upstream("gpt", "2026 SFT optimizer")
    twin = up.GPT(up.GPTConfig(**shape, window_pattern="SSSL"))
    lrs = {"embedding_lr": 0.3, "unembedding_lr": 0.008, "matrix_lr": 0.02, "weight_decay": 0.28}
    optimizer = twin.setup_optimizer(unembedding_lr=0.008, embedding_lr=0.3, matrix_lr=0.02, weight_decay=0.0)
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * 0.8
        group["initial_lr"] = group["lr"]

    def by_name(net: torch.nn.Module, groups: list) -> dict:
        names = {p: name for name, p in net.named_parameters()}
        return {names[p]: (g["lr"], g["initial_lr"], g["weight_decay"], g.get("betas"), g.get("momentum"))
                for g in groups for p in g["params"]}

    ours = build_optimizers(model, 0.8, lrs, None)
    assert by_name(model, [g for opt in ours for g in opt.param_groups]) == by_name(twin, optimizer.param_groups)


def test_sft_of_a_2026_base_model_runs_offline_warm_started(tmp_path):
    """chat_sft on a tiny 2026 base model (one base step, its step checkpoint beside it), the offline mixture:
    the recipe and base model's shapes resolved, the optimizers warm-started, upstream's rate clock."""
    texts = [m["content"] for c in chatterbot.conversations()[:500] for m in c]
    tok = Tokenizer.train(texts, vocab_size=300)
    tok.save(tmp_path / "tokenizer.json")
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, tok.vocab_size, 64, recipe="2026", window_pattern="SL"))
    model.init_weights()
    optimizers = model.setup_optimizers(0.3, 0.008, 0.02, 0.1)
    x = torch.randint(0, tok.vocab_size, (2, 64))
    model(x, x).backward()
    for opt in optimizers:
        opt.step()
    meta = {"settings": {"embedding_lr": 0.3, "unembedding_lr": 0.008, "matrix_lr": 0.02, "weight_decay": 0.28,
                         "max_seq_len": 64, "device_batch_size": 4, "total_batch_size": -1},
            "total_batch_size": 512, "model_config": model.export_config()}
    base = tmp_path / "base"
    StepCheckpoints(base / "steps" / "run", init_compute("cpu")).save(1, model, optimizers, {}, {**meta, "history": []})
    save_final(base, model, {**meta, "step": 1})
    sft = tmp_path / "sft"
    subprocess.run([sys.executable, "-m", "nanochat.scripts.chat_sft", f"--parent_dir={base}",
                    f"--tokenizer={tmp_path / 'tokenizer.json'}", f"--out_dir={sft}", f"--ckpt_dir={sft / 'steps'}",
                    "--mixture=offline", "--num_iterations=8", "--device=cpu", "--eval_tokens=1024",
                    "--eval_every=4", "--checkpoint_every=4"], check=True, capture_output=True, timeout=300)
    record = json.loads((sft / "chat_sft.json").read_text())
    assert {k: record["settings"][k] for k in ("recipe", "max_seq_len", "device_batch_size", "rows_per_step",
                                                "init_lr_frac", "grad_clip", "load_optimizer")} == {
        "recipe": "2026", "max_seq_len": 64, "device_batch_size": 4, "rows_per_step": 8, "init_lr_frac": 0.8,
        "grad_clip": 0.0, "load_optimizer": 1}
    assert [h["lr_mult"] for h in record["history"]] == [1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert record["mixture"] == {"chatterbot": 2026} and record["val_loss"] < record["initial_val_loss"]
    log = next(sft.glob("steps/*/train.log")).read_text()
    assert f"optimizer state from {base / 'steps/run/step_000001'}" in log
    assert load_model(sft)[1]["model_config"]["recipe"] == "2026"


def test_the_catalog_downloads_what_the_2026_mixture_reads():
    if "chat_sft_2026" not in MIXTURES:
        pytest.skip("nanochat.catalog has no MIXTURES['chat_sft_2026'] yet")
    assert sorted(MIXTURES["chat_sft_2026"]) == sorted(ENTRIES_2026)
    test_split = CATALOG["smoltalk_test"]
    assert (test_split.repo, test_split.revision) == (CATALOG["smoltalk"].repo, CATALOG["smoltalk"].revision)
