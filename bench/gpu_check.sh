#!/usr/bin/env bash
# The stages on one CUDA GPU, run by hand through their entry points (no Snakemake needed):
#   1. smoke: offline data -> tokenizer -> base_train -> base_loss -> mid_train -> chat_sft -> chat_eval
#      with a small model (depth 4, the tiny preset's batch shapes), everything on cuda, then the
#      evaluation throughput at d20 shape (bench/eval_throughput.py);
#   2. side by side with upstream at d20 shape (bench/side_by_side.py: tok/s, decoding, identical tokens);
#   3. throughput: d20 (upstream's speedrun shape, seq 2048, 32 x 2048 tokens per micro-batch) for a
#      few steps with torch.compile, printing tok/s and MFU per step.
#     bash bench/gpu_check.sh [WORKDIR] [D20_STEPS]
set -uo pipefail
work=${1:-/tmp/nanochat-gpu}
d20_steps=${2:-12}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}  # DEVICE=cpu tries the script on a machine without a GPU
mkdir -p "$work"
stage() { echo "=== $1 ($(date +%T))"; }

stage "data + tokenizer"
for i in 0 1 2 3; do
    $py -m nanochat.scripts.base_data --source=offline --num_shards=4 --index=$i --out="$work/data/shard_0000$i.parquet" || exit 1
done
shards=("$work"/data/shard_0000[0-2].parquet)
val=$work/data/shard_00003.parquet
$py -m nanochat.scripts.tok_train --vocab_size=8192 --out_dir="$work/tok" "${shards[@]}" || exit 1
tok=$work/tok/tokenizer.json
run=(--device=$device --log_every=10 --checkpoint_every=100 --eval_every=100 --eval_tokens=65536)

stage "smoke: base_train d4"
$py -m nanochat.scripts.base_train --depth=4 --max_seq_len=256 --device_batch_size=8 --total_batch_size=4096 \
    --num_iterations=200 "${run[@]}" --tokenizer="$tok" --val="$val" --out_dir="$work/base" \
    --ckpt_dir="$work/base/steps" "${shards[@]}" || exit 1
stage "smoke: base_loss"
$py -m nanochat.scripts.base_loss --split_tokens=65536 --device_batch_size=8 --model_dir="$work/base" \
    --tokenizer="$tok" --train="${shards[0]}" --val="$val" --out="$work/base_loss.json" || exit 1
chat=(--mixture=offline --max_seq_len=256 --device_batch_size=8 --rows_per_step=16 "${run[@]}"
      --tokenizer="$tok" --hub_dir="$work/hub")
stage "smoke: mid_train"
$py -m nanochat.scripts.mid_train "${chat[@]}" --parent_dir="$work/base" --out_dir="$work/mid" --ckpt_dir="$work/mid/steps" || exit 1
stage "smoke: chat_sft"
$py -m nanochat.scripts.chat_sft "${chat[@]}" --num_iterations=100 --parent_dir="$work/mid" --out_dir="$work/sft" \
    --ckpt_dir="$work/sft/steps" || exit 1
stage "smoke: chat_eval"
for task in mmlu humaneval spellingbee quartz; do
    $py -m nanochat.scripts.chat_eval --task=$task --source=offline --max_problems=20 --max_new_tokens=64 \
        --model_dir="$work/sft" --tokenizer="$tok" --out="$work/chat_eval/$task.json" ||
        echo "chat_eval $task failed (the offline MMLU and QuaRTz need the evals package)"
done
$py -m nanochat.scripts.chat_eval --source=offline --out="$work/chat_eval_sft.json" "$work"/chat_eval/*.json ||
    echo "chat_eval: a task record is missing"
stage "evaluation throughput: d20 shape, one at a time vs batched"
$py bench/eval_throughput.py --device=$device --items=64 --new_tokens=128 || exit 1

stage "side by side with upstream (../shared/anchors): d20 shape, both compiled, bf16"
$py bench/side_by_side.py --what train decode --depth=20 --width=1280 --vocab=65536 --seq_len=2048 --batch=32 \
    --steps=10 --warmup=3 --reps=1 --compile --device=$device || echo "side by side failed"

[ "$d20_steps" -gt 0 ] || exit 0
stage "throughput: d20, compiled, $d20_steps steps"
$py -m nanochat.scripts.base_train --depth=20 --max_seq_len=2048 --device_batch_size=32 --total_batch_size=524288 \
    --num_iterations="$d20_steps" --compile=true --device=$device --log_every=1 --checkpoint_every=100000 \
    --eval_every=100000 --eval_tokens=524288 --tokenizer="$tok" --val="$val" --out_dir="$work/d20" \
    --ckpt_dir="$work/d20/steps" "${shards[@]}"
stage "done"
