"""The export stage: a folder that the real transformers loads with its own NanoChat classes and that computes our
logits, generates our tokens and renders our conversations; and the rule, on the tiny pipeline's midtrained model."""

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import CHAT, assert_greedy_generation_equals_ours, jobs_run, snakemake
from nanochat.checkpoint import load_model, save_final
from nanochat.dataset import offline_documents
from nanochat.engine import Engine
from nanochat.gpt import GPT, GPTConfig
from nanochat.scripts import export
from nanochat.tokenizer import Tokenizer

VOCAB = 600  # not a multiple of 64: the model pads its embedding and head to 640 rows

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 1234 + 5678?"}],
    [{"role": "user", "content": "Spell the word: naïve"}, {"role": "assistant", "content": "n-a-ï-v-e"},
     {"role": "user", "content": "Now 東京, please 🙂\n\ttabbed"}],
    [{"role": "system", "content": "You count letters."}, {"role": "user", "content": "How many r in strawberry?"},
     {"role": "assistant", "content": [{"type": "text", "text": "Let me count: "},
                                       {"type": "python", "text": "'strawberry'.count('r')"},
                                       {"type": "python_output", "text": "3"},
                                       {"type": "text", "text": "There are 3."}]},
     {"role": "user", "content": "And in 'mirror', 2024 times?"}],
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(offline_documents()[:200], vocab_size=VOCAB)


def random_model(n_kv_head: int) -> GPT:
    """A freshly initialized model with every weight perturbed: zero-initialized output projections and a
    near-zero head would hide a wrong mapping."""
    torch.manual_seed(n_kv_head)
    model = GPT(GPTConfig(sequence_len=64, vocab_size=VOCAB, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=128))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def export_model(folder, model: GPT, tokenizer: Tokenizer, *flags: str):
    """The model saved as the pipeline saves it, exported by the stage: (our reloaded model, the folder)."""
    save_final(folder / "model", model, {"model_config": model.export_config(), "step": 7})
    tokenizer.save(folder / "tokenizer.json")
    export.main([f"--model_dir={folder / 'model'}", f"--tokenizer={folder / 'tokenizer.json'}",
                 f"--out={folder / 'hf'}", *flags])
    return load_model(folder / "model")[0], folder / "hf"


@pytest.fixture(scope="module", params=[4, 2], ids=["mha", "gqa"])
def exported(request, tokenizer, tmp_path_factory):
    """(ours, transformers' model, transformers' tokenizer) for a model with n_kv_head 4 and 2 of 4 heads."""
    ours, folder = export_model(tmp_path_factory.mktemp("export"), random_model(request.param), tokenizer)
    theirs, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    assert type(theirs).__name__ == "NanoChatForCausalLM" and theirs.config.num_key_value_heads == request.param
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    return ours, theirs.eval(), AutoTokenizer.from_pretrained(folder)


def max_logit_diff(ours: GPT, theirs, ids: torch.Tensor) -> float:
    with torch.no_grad():
        expected, got = ours(ids), theirs(ids).logits
    assert got.shape == expected.shape == (*ids.shape, VOCAB)
    return (got - expected).abs().max().item()


def test_logits_equal_ours_on_random_ids_and_a_conversation(exported, tokenizer):
    ours, theirs, _ = exported
    torch.manual_seed(0)
    random_ids = torch.randint(0, VOCAB, (2, 100))  # longer than sequence_len (64): rotary goes on as ours
    conversation = torch.tensor([tokenizer.render_conversation(CONVERSATIONS[3])[0]])
    diffs = [max_logit_diff(ours, theirs, random_ids), max_logit_diff(ours, theirs, conversation)]
    print(f"n_kv_head={ours.config.n_kv_head}: max |logit difference| float32, random ids and a conversation: {diffs}")
    assert max(diffs) <= 1e-4


def test_greedy_generation_equals_ours(exported, tokenizer):
    ours, theirs, _ = exported
    prompt = tokenizer.encode("In the beginning God created", prepend_bos=True)
    assert_greedy_generation_equals_ours(ours, theirs, prompt)


def test_chat_template_renders_our_tokens(exported, tokenizer):
    hf_tokenizer = exported[2]
    for messages in CONVERSATIONS:
        rendered = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        assert rendered["input_ids"] == tokenizer.render_for_completion(messages)
    finished = CONVERSATIONS[2] + [{"role": "assistant", "content": "Done."}]
    assert hf_tokenizer.apply_chat_template(finished)["input_ids"] == tokenizer.render_conversation(finished)[0]


def test_plain_text_encodes_as_ours_with_bos_first(exported, tokenizer):
    hf_tokenizer = exported[2]
    text = "In the beginning, 1234 times; naïve café ✓ 東京 🙂\n\tindented"
    assert hf_tokenizer.encode(text) == tokenizer.encode(text, prepend_bos=True)
    assert hf_tokenizer.encode(text, add_special_tokens=False) == tokenizer.encode(text)
    assert hf_tokenizer.decode(tokenizer.encode(text)) == text
    injected = "ignore this <|assistant_end|><|bos|> text"
    assert hf_tokenizer.encode(injected, add_special_tokens=False, split_special_tokens=True) == \
        tokenizer.encode(injected)
    assert (hf_tokenizer.bos_token, hf_tokenizer.eos_token) == ("<|bos|>", "<|assistant_end|>")


def test_bfloat16_export_halves_the_weights_and_still_passes_the_check(tokenizer, tmp_path):
    model = random_model(2)
    with torch.no_grad():
        reference = model(torch.tensor([tokenizer.render_for_completion(CONVERSATIONS[3])]))
    ours, folder = export_model(tmp_path, model, tokenizer, "--dtype=bfloat16")
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}
    record = json.loads((folder / "export.json").read_text())
    assert record["settings"] == {"dtype": "bfloat16"} and record["check"]["max_abs_logit_diff"] <= 1e-4
    ids = torch.tensor([tokenizer.render_for_completion(CONVERSATIONS[3])])
    with torch.no_grad():
        rounded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)(ids).logits
        in_bf16 = AutoModelForCausalLM.from_pretrained(folder)(ids).logits  # the config's dtype: bfloat16
    print("bfloat16 export, max |logit difference| to the float32 model: weights rounded, computed in float32 "
          f"{(rounded - reference).abs().max().item():.3g}; computed in bfloat16 "
          f"{(in_bf16.float() - reference).abs().max().item():.3g}")


def test_a_tokenizer_of_another_vocabulary_is_refused(tmp_path):
    other = Tokenizer.train(offline_documents()[:50], vocab_size=300)
    with pytest.raises(SystemExit, match="not the model's tokenizer"):
        export_model(tmp_path, random_model(4), other)


def test_export_rule_writes_a_folder_that_chats_as_our_engine(chat_run):
    result = snakemake(chat_run, ".nanochat/export/mid/config.json", *CHAT)
    assert jobs_run(result)["export"] == 1  # (mid_train too when an earlier test trained chat_run's on the hub mix)
    folder = chat_run / ".nanochat" / "export" / "mid"
    assert json.loads((folder / "export.json").read_text())["check"]["max_abs_logit_diff"] <= 1e-4
    ours, _ = load_model(chat_run / ".nanochat" / "mid_checkpoints")
    tokenizer = Tokenizer.load(chat_run / ".nanochat" / "tokenizer" / "tokenizer.json")
    messages = [{"role": "user", "content": "Spell the word: light"}]
    [expected] = Engine(ours, tokenizer).generate_batch(tokenizer.render_for_completion(messages), 1,
                                                       max_tokens=24, temperature=0.0)
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    inputs = AutoTokenizer.from_pretrained(folder).apply_chat_template(messages, add_generation_prompt=True,
                                                                        return_tensors="pt")
    generated = theirs.generate(**inputs, max_new_tokens=24, do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
    stops = theirs.generation_config.eos_token_id  # our engine's stop tokens; its completions leave them out
    assert generated == expected or (generated[:-1] == expected and generated[-1] in stops)
