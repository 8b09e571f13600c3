"""Export a model (base, mid, sft or rl) as a folder that Hugging Face transformers loads with its own
NanoChat classes (`NanoChatForCausalLM`, model_type "nanochat"; no remote code), then check the folder.
A 2026-recipe model carries its own modeling file instead (see the end of this docstring).

    python -m nanochat.scripts.export --model_dir=sft_checkpoints/ --tokenizer=tok/tokenizer.json --out=export/sft/

The folder: model.safetensors, config.json, generation_config.json, tokenizer.json, tokenizer_config.json
(with the chat template) and this stage's record, export.json.

How our GPT (nanochat/gpt.py) maps onto transformers' NanoChat (models/nanochat/modeling_nanochat.py of the
pinned transformers), detail by detail:
  weights     renamed only: transformer.wte -> model.embed_tokens, h.<i>.attn.c_q/c_k/c_v/c_proj ->
              model.layers.<i>.self_attn.q_proj/k_proj/v_proj/o_proj, mlp.c_fc/c_proj -> mlp.fc1/fc2, lm_head;
              no biases anywhere, head untied (tie_word_embeddings false), GQA (num_key_value_heads)
  rotary      no permutation of q/k rows: NanoChat's rotate_half is (x2, -x1), so q cos + rotate_half(q) sin =
              [x1 cos + x2 sin, -x1 sin + x2 cos], exactly apply_rotary, with the same frequencies (rope_theta
              10000, cos/sin repeated over both halves); both apply the QK norm after rotary
  RMSNorm     parameter-free in both (no norm weights to add), at the same places: after the embedding, before
              attention and MLP, before the head, on q and k. F.rms_norm's default eps is torch.finfo(dtype).eps:
              rms_norm_eps is float32's, 1.19e-7 (transformers' default, 1e-6, changes small activations)
  MLP         ReLU^2 = hidden_act "relu2", intermediate_size 4 x width
  soft cap    15 tanh(x / 15) = final_logit_softcapping 15
  vocabulary  ours pads the embedding and head to a multiple of 64 and crops the logits to vocab_size; the
              padding rows are cropped here (never looked up, their logits never seen): vocab_size and the logits
              are the tokenizer's
In float32 the logits are ours: the stage checks them on a rendered conversation (TOLERANCE). Not bridged: run in
bfloat16, transformers rounds the logits to bfloat16 before the soft cap (ours caps in float32); transformers has
no rotary limit (ours stops at 10 x sequence_len); and text holding a special token's string, e.g. "<|user_end|>",
becomes that control token in transformers' tokenizer, which the chat template relies on, never in ours (plain
text: pass split_special_tokens=True to encode it as ours does); two text parts in a row in one assistant message
are encoded joined by the template, one by one by ours (our data never has two in a row).

Special tokens: plain text is encoded with <|bos|> first, as every document and prompt starts
(add_special_tokens=False: without). Generation stops at <|assistant_end|> or <|bos|>, like nanochat.engine, so a
base model stops where its document would end. eos and pad are <|assistant_end|>.

A 2026-recipe model (GPTConfig.recipe "2026", upstream 92d63d4) has what transformers' NanoChat lacks: value
embeddings, smear, backout, per-layer lambdas, sliding windows (and RoPE base 100,000, q and k x 1.2). Its folder
holds nanochat/hf_nanochat_2026.py, the model written for transformers (torch and transformers only), and config.json
names its classes in "auto_map" (model_type "nanochat_2026", which transformers does not know): it loads with
AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True) (without the flag transformers asks, or refuses:
never its own NanoChat). The weights are our state dict as it is (our names, vocabulary padding kept), so they load
back into nanochat's GPT. That file has no KV cache: generate() recomputes the sequence for every token (use_cache
false). The check also runs sequence_len + 2 random tokens, past both windows. A model setting that the exported model
does not compute is refused, by name (EXPORTED_FIELDS).
"""

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import processors

from nanochat import settings
from nanochat.checkpoint import load_model
from nanochat.common import run_record, start_compute_stage, write_json_atomic
from nanochat.gpt import GPT, SOFTCAP
from nanochat.tokenizer import Tokenizer

log = logging.getLogger("nanochat.scripts.export")

ROPE_THETA = 10000.0  # GPT._rotary's base
TOLERANCE = 1e-4  # largest |logit difference| accepted between transformers and ours, both in float32
# Our GPTConfig fields that the exported model computes (a course model's window_pattern is all L: GPT refuses S);
# a model with any other field is refused, naming it, instead of exported as another model.
EXPORTED_FIELDS = {"sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "recipe", "window_pattern"}
# Our parameter names inside block <i> -> transformers' (the mapping of its convert_nanochat_checkpoints.py).
BLOCK_NAMES = {"attn.c_q": "self_attn.q_proj", "attn.c_k": "self_attn.k_proj", "attn.c_v": "self_attn.v_proj",
               "attn.c_proj": "self_attn.o_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}

# Renders exactly Tokenizer.render_conversation's tokens (a system message starts the first user message,
# assistant content is a string or text/python/python_output parts); add_generation_prompt opens the reply.
CHAT_TEMPLATE = (
    "<|bos|>"
    "{%- set ns = namespace(messages=messages) -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.messages = [{'role': 'user', 'content': messages[0]['content'] + '\\n\\n' + messages[1]['content']}]"
    " + messages[2:] -%}"
    "{%- endif -%}"
    "{%- for message in ns.messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '<|user_start|>' + message['content'] + '<|user_end|>' -}}"
    "{%- else -%}"
    "{{- '<|assistant_start|>' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'python' -%}{{- '<|python_start|>' + part['text'] + '<|python_end|>' -}}"
    "{%- elif part['type'] == 'python_output' -%}{{- '<|output_start|>' + part['text'] + '<|output_end|>' -}}"
    "{%- else -%}{{- raise_exception('unknown assistant message part ' + part['type']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|assistant_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant_start|>' -}}{%- endif -%}"
)

# The conversation the stage checks the folder with: a system message, two turns, a tool call, unicode, numbers.
CHECK_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "How many letters are in 'naïve café'? Answer in 1 line."},
    {"role": "assistant", "content": [{"type": "text", "text": "Let me count: "},
                                      {"type": "python", "text": "len('naïve café')"},
                                      {"type": "python_output", "text": "10"},
                                      {"type": "text", "text": "10 characters, 9 letters."}]},
    {"role": "user", "content": "And 12 * 34 = ?"},
]


@dataclasses.dataclass
class ExportSettings:
    """Hugging Face transformers export of a model."""
    dtype: Literal["float32", "bfloat16"] = "float32"  # dtype of the written weights: float32 is the trained model exactly, bfloat16 half the size


def transformers_weights(model: GPT, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Our state dict under transformers' names, the vocabulary padding rows cropped, in `dtype`."""
    vocab = model.config.vocab_size
    weights = {}
    for name, tensor in model.state_dict().items():
        if name == "transformer.wte.weight":
            name, tensor = "model.embed_tokens.weight", tensor[:vocab]
        elif name == "lm_head.weight":
            tensor = tensor[:vocab]
        else:  # transformer.h.<i>.<module>.<linear>.weight
            _, _, layer, module, linear, kind = name.split(".")
            name = f"model.layers.{layer}.{BLOCK_NAMES[f'{module}.{linear}']}.{kind}"
        weights[name] = tensor.to(dtype).contiguous()
    return weights


def is_2026(model: GPT) -> bool:
    return getattr(model.config, "recipe", "course") == "2026"


def unexportable(model: GPT) -> list[str]:
    """Our model's settings that the folder's model would not compute (none: it can be exported)."""
    return sorted(set(dataclasses.asdict(model.config)) - EXPORTED_FIELDS)


def write_folder(folder: Path, model: GPT, tokenizer: Tokenizer, dtype: str) -> None:
    """The files transformers reads, into `folder`."""
    from transformers import GenerationConfig  # here: the hub is offline only once the stage runs

    bos, end = tokenizer.bos_id, tokenizer.special_id("<|assistant_end|>")
    stop = {"bos_token_id": bos, "eos_token_id": [end, bos]}  # where nanochat.engine stops
    if is_2026(model):
        write_2026_model(folder, model, dtype, stop)
    else:
        write_nanochat_model(folder, model, dtype, stop)
    no_cache = {"use_cache": False} if is_2026(model) else {}  # hf_nanochat_2026 has no KV cache
    # pad = eos, transformers' convention. Never <|bos|>: generate would take the <|bos|> starting every prompt
    # for padding and mask it out whenever the stop tokens (eos_token_id) were overridden without it.
    generation_config = GenerationConfig(**stop, pad_token_id=end, **no_cache)
    (folder / "generation_config.json").write_text(generation_config.to_json_string())
    hf = HFTokenizer.from_str(tokenizer.hf.to_str())
    # Plain text gets <|bos|> first, as every document and prompt starts (add_special_tokens=False: none).
    hf.post_processor = processors.TemplateProcessing(single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B:1",
                                                      special_tokens=[("<|bos|>", bos)])
    hf.save(str(folder / "tokenizer.json"))
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>",
                        "eos_token": "<|assistant_end|>", "pad_token": "<|assistant_end|>",
                        "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def write_nanochat_model(folder: Path, model: GPT, dtype: str, stop: dict) -> None:
    """config.json and model.safetensors for transformers' own NanoChatForCausalLM (a course model)."""
    from transformers import NanoChatConfig

    c = model.config
    config = NanoChatConfig(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=4 * c.n_embd, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head, max_position_embeddings=c.sequence_len,
        hidden_act="relu2", attention_bias=False, rms_norm_eps=torch.finfo(torch.float32).eps,
        final_logit_softcapping=SOFTCAP, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        tie_word_embeddings=False, pad_token_id=None,  # a pad id would freeze that embedding row in finetuning
        architectures=["NanoChatForCausalLM"], dtype=dtype, **stop)
    save_file(transformers_weights(model, getattr(torch, dtype)), folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(config.to_json_string())


def write_2026_model(folder: Path, model: GPT, dtype: str, stop: dict) -> None:
    """config.json, model.safetensors and the modeling file for hf_nanochat_2026's NanoChat2026ForCausalLM, loaded
    with trust_remote_code: our state dict under our names."""
    from nanochat import hf_nanochat_2026

    c, module = model.config, Path(hf_nanochat_2026.__file__)
    classes = {"AutoConfig": "NanoChat2026Config", "AutoModelForCausalLM": "NanoChat2026ForCausalLM"}
    config = hf_nanochat_2026.NanoChat2026Config(
        vocab_size=c.vocab_size, sequence_len=c.sequence_len, n_layer=c.n_layer, n_head=c.n_head,
        n_kv_head=c.n_kv_head, n_embd=c.n_embd, window_pattern=c.window_pattern,
        auto_map={auto: f"{module.stem}.{name}" for auto, name in classes.items()},
        architectures=[classes["AutoModelForCausalLM"]], pad_token_id=None, dtype=dtype, **stop)
    weights = {name: tensor.to(getattr(torch, dtype)).contiguous() for name, tensor in model.state_dict().items()}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(config.to_json_string())
    shutil.copyfile(module, folder / module.name)


def check_folder(folder: Path, model: GPT, tokenizer: Tokenizer, dtype: torch.dtype) -> dict:
    """Load the folder with transformers, as a user would: its chat tokens must be ours, its float32 logits
    those of our model holding the written weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A 2026 folder's config.json names remote code: without the flag AutoTokenizer asks on stdin whether to run it.
    hf_tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=is_2026(model))
    rendered = hf_tokenizer.apply_chat_template(CHECK_CONVERSATION, add_generation_prompt=True)
    ids = rendered["input_ids"]
    if ids != tokenizer.render_for_completion(CHECK_CONVERSATION):
        raise SystemExit("error: the chat template's tokens differ from Tokenizer.render_for_completion's")
    theirs, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True,
                                                        trust_remote_code=is_2026(model))
    if any(info.values()):
        raise SystemExit(f"error: transformers' model and ours differ in their weights: {info}")
    # Ours holding the written weights (bfloat16 rounds them; the rotary tables are no weights), in float32.
    model.load_state_dict({name: w.to(dtype).float() for name, w in model.state_dict().items()})
    sequences = [ids]
    if is_2026(model):  # random tokens past both windows (a query of an L layer sees sequence_len earlier tokens)
        generator = torch.Generator().manual_seed(0)
        sequences.append(torch.randint(model.config.vocab_size, (model.config.sequence_len + 2,),
                                       generator=generator).tolist())
    with torch.no_grad():
        diff = max((theirs(torch.tensor([s])).logits - model(torch.tensor([s]))).abs().max().item() for s in sequences)
    log.info("transformers vs ours on %s tokens: max |logit difference| %.3g", [len(s) for s in sequences], diff)
    if diff > TOLERANCE:
        raise SystemExit(f"error: transformers' logits differ from ours by up to {diff:.3g} (> {TOLERANCE})")
    windows = {"window_tokens": len(sequences[1])} if is_2026(model) else {}
    return {"tokens": len(ids), **windows, "max_abs_logit_diff": diff}


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, ExportSettings, model_dir="folder with model.pt and meta.json",
                                   tokenizer="the model's tokenizer.json", out="folder to write")
    args = parser.parse_args(argv)
    cfg: ExportSettings = settings.from_args(ExportSettings, args)
    start_compute_stage([args.model_dir / "model.pt", args.model_dir / "meta.json", args.tokenizer])
    started = time.time()
    model, meta = load_model(args.model_dir)
    tokenizer = Tokenizer.load(args.tokenizer)
    if missing := unexportable(model):
        raise SystemExit(f"error: {args.model_dir} cannot be exported: the exported model has no setting "
                         f"{', '.join(missing)} (nanochat/scripts/export.py EXPORTED_FIELDS)")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise SystemExit(f"error: {args.tokenizer} has {tokenizer.vocab_size} tokens, the model "
                         f"{model.config.vocab_size}: not the model's tokenizer")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out, prefix=".export-") as staging:
        write_folder(Path(staging), model, tokenizer, cfg.dtype)
        check = check_folder(Path(staging), model, tokenizer, getattr(torch, cfg.dtype))
        for path in sorted(Path(staging).iterdir()):  # each file appears at once under its final name
            os.replace(path, args.out / path.name)
    write_json_atomic(args.out / "export.json", {
        "settings": dataclasses.asdict(cfg), "model_step": meta["step"], "model_config": meta["model_config"],
        "transformers_version": version("transformers"), "check": check, **run_record(started)})


if __name__ == "__main__":
    main()
