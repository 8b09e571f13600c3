"""The export of a 2026-recipe model: a folder with its own modeling file (nanochat/hf_nanochat_2026.py) that the real
transformers loads with trust_remote_code and that computes our logits (windows, value embeddings, smear, backout,
lambdas), generates our tokens and renders our conversations; and upstream 92d63d4's weights give upstream's logits."""

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import assert_greedy_generation_equals_ours
from nanochat import hf_nanochat_2026
from nanochat.dataset import offline_documents
from nanochat.gpt import GPT, GPTConfig
from nanochat.scripts import export
from nanochat.tokenizer import Tokenizer
from oracle_2026 import upstream
from test_export import CONVERSATIONS, VOCAB, export_model

SEQUENCE_LEN = 256  # short window 128: the 300-token inputs below are past both windows
SHAPE = dict(sequence_len=SEQUENCE_LEN, vocab_size=VOCAB, n_head=4, n_embd=128)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(offline_documents()[:200], vocab_size=VOCAB)


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The freshly initialized model with every weight perturbed: zero-initialized projections and lambdas would
    hide a wrong mapping."""
    model.init_weights()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model.eval()


def random_model(n_layer: int, n_kv_head: int, window_pattern: str) -> GPT:
    config = GPTConfig(**SHAPE, n_layer=n_layer, n_kv_head=n_kv_head, recipe="2026", window_pattern=window_pattern)
    return perturbed(GPT(config), n_layer)


def load_folder(folder, **overrides):
    """transformers' model of the folder, as a user loads it, in float32."""
    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=True,
                                                       output_loading_info=True, **overrides)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    return model.eval()


def max_logit_diff(ours: torch.nn.Module, theirs, ids: torch.Tensor) -> float:
    with torch.no_grad():
        expected, got = ours(ids), theirs(ids).logits
    assert got.shape == expected.shape == (*ids.shape, VOCAB)
    return (got - expected).abs().max().item()


@pytest.fixture(scope="module", params=[(4, 2, "SSSL"), (3, 4, "SL"), (2, 4, "L")], ids=["SSSL-gqa", "SL", "L"])
def exported(request, tokenizer, tmp_path_factory):
    """(ours, the exported folder) for 2026 models of depth 4 with GQA, depth 3 and depth 2 without windows."""
    return export_model(tmp_path_factory.mktemp("export"), random_model(*request.param), tokenizer)


def test_the_folder_loads_only_with_remote_code_and_holds_our_state_dict(exported):
    ours, folder = exported
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "nanochat_2026" and config["window_pattern"] == ours.config.window_pattern
    assert (folder / "hf_nanochat_2026.py").read_text() == Path(hf_nanochat_2026.__file__).read_text()
    with pytest.raises(ValueError, match="trust_remote_code"):  # never transformers' NanoChat, silently
        AutoModelForCausalLM.from_pretrained(folder)
    assert type(load_folder(folder)).__name__ == "NanoChat2026ForCausalLM"
    with safe_open(folder / "model.safetensors", "pt") as weights:  # our names, our shapes: they load back
        assert {k: weights.get_tensor(k).shape for k in weights.keys()} == \
            {k: v.shape for k, v in ours.state_dict().items()}
    assert json.loads((folder / "generation_config.json").read_text())["use_cache"] is False
    check = json.loads((folder / "export.json").read_text())["check"]
    assert check["window_tokens"] == SEQUENCE_LEN + 2 and check["max_abs_logit_diff"] <= 1e-4


def test_logits_equal_ours_past_both_windows_and_on_a_conversation(exported, tokenizer):
    ours, folder = exported
    theirs = load_folder(folder)
    torch.manual_seed(0)
    random_ids = torch.randint(0, VOCAB, (2, 300))
    conversation = torch.tensor([tokenizer.render_conversation(CONVERSATIONS[3])[0]])
    diffs = [max_logit_diff(ours, theirs, random_ids), max_logit_diff(ours, theirs, conversation)]
    print(f"{ours.config.window_pattern}: max |logit difference| float32, random ids and a conversation: {diffs}")
    assert max(diffs) <= 1e-4
    labels = random_ids.clone()
    labels[0, :50] = -100  # transformers' ignored label; ours is -1
    targets = torch.where(labels == -100, -1, labels)
    with torch.no_grad():  # transformers shifts the labels itself: the loss of predicting ids[1:] from ids[:-1]
        assert theirs(random_ids, labels=labels).loss.item() == \
            pytest.approx(ours(random_ids[:, :-1], targets[:, 1:]).item(), abs=1e-5)
    if "S" in ours.config.window_pattern:  # the windows matter on these ids: all-L windows give other logits
        assert max_logit_diff(ours, load_folder(folder, window_pattern="L"), random_ids) > 1e-3


def test_computed_in_bfloat16_the_logits_are_ours_in_bfloat16(exported):
    """transformers holds every weight in bfloat16, ours its matrices in float32, cast to bfloat16 at each product:
    the same products, the same numbers (on this CPU)."""
    ours, folder = exported
    ours = copy.deepcopy(ours)
    ours.cast_embeddings(torch.bfloat16)  # ours computing in bfloat16, as on CUDA
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, trust_remote_code=True).eval()
    random_ids = torch.randint(0, VOCAB, (2, 300), generator=torch.Generator().manual_seed(0))
    diff = max_logit_diff(ours, theirs, random_ids)
    print(f"{ours.config.window_pattern}: max |logit difference| bfloat16: {diff}")
    assert diff <= 1e-4


def test_greedy_generation_past_the_short_window_equals_ours(exported):
    ours, folder = exported
    theirs = load_folder(folder)
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (150,)).tolist()  # the 32 new tokens see past the short window (128)
    assert_greedy_generation_equals_ours(ours, theirs, ids)


def test_a_kv_cache_and_padding_are_refused(exported):
    theirs = load_folder(exported[1])
    prompt = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="use_cache=True"):
        theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=2, use_cache=True)
    with pytest.raises(ValueError, match="padding"):
        theirs(prompt, attention_mask=torch.tensor([[0, 1, 1, 1]]))


def test_chat_template_and_plain_text_are_ours(exported, tokenizer):
    hf_tokenizer = AutoTokenizer.from_pretrained(exported[1], trust_remote_code=True)
    for messages in CONVERSATIONS:
        rendered = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        assert rendered["input_ids"] == tokenizer.render_for_completion(messages)
    text = "In the beginning, 1234 times; naïve café ✓ 東京 🙂\n\tindented"
    assert hf_tokenizer.encode(text) == tokenizer.encode(text, prepend_bos=True)
    assert (hf_tokenizer.bos_token, hf_tokenizer.eos_token) == ("<|bos|>", "<|assistant_end|>")


def test_bfloat16_export_still_passes_the_check(tokenizer, tmp_path):
    _, folder = export_model(tmp_path, random_model(4, 2, "SSSL"), tokenizer, "--dtype=bfloat16")
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}
    record = json.loads((folder / "export.json").read_text())
    assert record["settings"] == {"dtype": "bfloat16"} and record["check"]["max_abs_logit_diff"] <= 1e-4


def test_upstream_92d63d4_weights_give_upstreams_logits(tmp_path):
    gpt = upstream("gpt", "2026 export")
    model = perturbed(gpt.GPT(gpt.GPTConfig(**SHAPE, n_layer=4, n_kv_head=2, window_pattern="SSSL")), 4)
    export.write_2026_model(tmp_path, model, "float32", {"bos_token_id": 0, "eos_token_id": [1, 0]})
    theirs = load_folder(tmp_path)
    random_ids = torch.randint(0, VOCAB, (2, 300), generator=torch.Generator().manual_seed(0))
    assert max_logit_diff(model, theirs, random_ids) <= 1e-4


def test_a_folder_whose_windows_differ_from_ours_is_refused(tokenizer, tmp_path, monkeypatch):
    """The stage's own check runs past the short window: a modeling file with all-long windows fails it (the
    conversation it also checks is shorter than the short window)."""
    write = export.write_2026_model

    def write_without_short_windows(folder, *args):
        write(folder, *args)
        modeling = folder / "hf_nanochat_2026.py"
        modeling.write_text(modeling.read_text().replace("short = -(-long // (4 * 128)) * 128", "short = long"))

    monkeypatch.setattr(export, "write_2026_model", write_without_short_windows)
    with pytest.raises(SystemExit, match="logits differ from ours"):
        export_model(tmp_path, random_model(4, 2, "SSSL"), tokenizer)
    assert not (tmp_path / "hf" / "config.json").exists()


def test_a_model_setting_the_folder_does_not_compute_is_refused(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "EXPORTED_FIELDS", export.EXPORTED_FIELDS - {"window_pattern"})
    with pytest.raises(SystemExit, match="has no setting window_pattern"):
        export_model(tmp_path, random_model(2, 4, "L"), tokenizer)
