#!/usr/bin/env bash
# Does lm-workbench work on this CUDA GPU, and how fast? One short check (a few minutes).
#
#   bench/gpu_check.sh
#
# 1. trains scratch:small with mixed precision (bf16 autocast; fp16 with a
#    gradient scaler on GPUs without bf16), then resumes it for more steps;
# 2. fine-tunes a GPT-2-size model: gpt2 from the Hugging Face cache when it
#    is there, else a randomly initialised GPT-2 (12 layers, 768 wide) built
#    from its config, so no network is needed;
# 3. trains LoRA adapters on that model and exports them merged;
# 4. with two or more GPUs, trains scratch:small as 2 processes (--nproc 2);
# 5. generates from the checkpoints, and checks that each checkpoint loads
#    back (through the workbench and through plain transformers) with the
#    same logits;
# 6. trains the GPT-2-size model at block size 1024 in bf16 with --compile off
#    and on (--batch-size auto), for the speed the issue's goal is about: >= 40 % MFU
#    on an H100-class GPU;
# then prints tokens/s (and MFU, on a GPU in engine/mfu.py's table) for
# training and generation, and GPU memory.
#
# Without a CUDA GPU it fails at once and says so. GPU_CHECK_CPU=1 runs the
# same steps on the CPU with tiny sizes, to check this script itself; its
# numbers mean nothing. Runs go to a temporary LMWB_HOME, removed at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LMWB_HOME=$(mktemp -d -t lmwb-gpu-check-XXXXXX)
export LMWB_HOME
trap 'rm -rf "$LMWB_HOME"' EXIT

if [[ "${GPU_CHECK_CPU:-0}" == 1 ]]; then
    echo "gpu_check: GPU_CHECK_CPU=1 — checking the script on the CPU with tiny sizes; the numbers mean nothing."
    DEVICE=cpu PRECISION=fp32 GPUS=0
    SMALL=(--model scratch:nano --dataset fables --batch-size 4 --block-size 64) SMALL_STEPS=12
    FINE=(--dataset fables --batch-size 2 --block-size 64) FINE_STEPS=6 GPT2_LAYERS=2 GPT2_WIDTH=64 GPT2_HEADS=2
    SPEED_BLOCK=64 SPEED_BATCH=2 SPEED_STEPS=8
else
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        "$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA build: {torch.version.cuda}")' >&2 || true
        echo "gpu_check: FAILED: torch sees no CUDA GPU here. This check needs an NVIDIA GPU and the CUDA build" \
             "of torch (see README 'Installing torch'); nvidia-smi should list the GPU." >&2
        exit 1
    fi
    DEVICE=cuda PRECISION=auto
    GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
    SMALL=(--model scratch:small --dataset fables --batch-size 32 --block-size 512) SMALL_STEPS=60
    FINE=(--dataset fables --batch-size 8 --block-size 1024) FINE_STEPS=30 GPT2_LAYERS=12 GPT2_WIDTH=768 GPT2_HEADS=12
    SPEED_BLOCK=1024 SPEED_BATCH=auto SPEED_STEPS=40
fi
"$PY" -c 'import torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu_check: {torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB, "
          f"bf16: {torch.cuda.is_bf16_supported()}, torch {torch.__version__}, CUDA {torch.version.cuda}")'

COMMON=(--device "$DEVICE" --precision "$PRECISION" --eval-every 1000 --sample-every 1000 --warmup 5)
SUMMARY=()

# Train with `lmwb train ARGS...`, show its last progress line, and set RUN to the run id.
train() {
    local log="$LMWB_HOME/train-$((${#SUMMARY[@]} + 1)).log"
    "$PY" -m tui.cli train "${COMMON[@]}" "$@" >"$log" 2>&1 || { cat "$log" >&2; echo "gpu_check: FAILED: lmwb train $*" >&2; exit 1; }
    RUN=$(sed -n 's/^\(Started\|Resuming\) run \([0-9a-z]*\).*/\2/p' "$log" | head -n 1)
    grep '^step ' "$log" | tail -n 1 || true
    [[ -n "$RUN" ]] || { cat "$log" >&2; echo "gpu_check: FAILED: no run id in the output of lmwb train $*" >&2; exit 1; }
}

# Median tokens/s (and MFU, when the GPU's peak is known) of a run's steps after the first five
# (warm-up, and the compile of a compiled run), from the store.
train_speed() {
    "$PY" -c 'import statistics, sys
from engine.store import RunStore
rows = RunStore().metrics(sys.argv[1])[5:]
speeds = [row["tokens_per_sec"] for row in rows]
mfus = [row["mfu"] for row in rows if row.get("mfu") is not None]
mfu = f", MFU {statistics.median(mfus):.1%}" if mfus else ""
print(f"{statistics.median(speeds):,.0f} tok/s{mfu}" if speeds else "- (too few steps)")' "$1"
}

# Generate up to 200 tokens from a model source; print its tokens/s.
generate_speed() {
    "$PY" -m tui.cli generate --model "$1" --device "$DEVICE" --prompt "Once upon a time" --max-new-tokens 200 \
        --seed 0 --json | tail -n 1 | "$PY" -c 'import json, sys
summary = json.load(sys.stdin)
speed, tokens = summary["tokens_per_second"], summary["tokens"]
print(f"{speed:,.0f} tok/s ({tokens} tokens)")'
}

# The checkpoint of run:ID loads through the workbench and through plain transformers with the same logits.
round_trip() {
    "$PY" - "$1" "$DEVICE" <<'EOF'
import sys
import torch
from transformers import AutoModelForCausalLM
from engine.lora import is_adapter_directory
from engine.model_source import ModelSource
from engine.models import export_model, load_model, resolve_checkpoint
from engine.store import RunStore

run_id, device = sys.argv[1:]
source = ModelSource("run", run_id)
checkpoint = resolve_checkpoint(source, RunStore())
loaded = load_model(source, device=device)
plain_dir = checkpoint
if is_adapter_directory(checkpoint):  # LoRA: plain transformers reads the merged export
    plain_dir = export_model(source, checkpoint.parent.parent / "merged")
plain = AutoModelForCausalLM.from_pretrained(plain_dir).to(loaded.device).eval()
ids = torch.randint(0, loaded.model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
ids = ids.to(loaded.device)
with torch.no_grad():
    difference = (loaded.model(input_ids=ids).logits - plain(input_ids=ids).logits).abs().max().item()
if difference > 1e-3:
    sys.exit(f"gpu_check: FAILED: {checkpoint} gives logits {difference:.2e} apart through the workbench and "
             "through plain transformers")
print(f"round trip ok: {checkpoint.name} ({'LoRA adapters' if plain_dir != checkpoint else 'whole model'}), "
      f"logits within {difference:.1e}")
EOF
}

echo "== 1. scratch:small, then resumed =="
train "${SMALL[@]}" --steps $((SMALL_STEPS / 2)) --name "gpu check small"
SMALL_RUN=$RUN
train --resume "$SMALL_RUN" --steps "$SMALL_STEPS"
round_trip "$SMALL_RUN"
SUMMARY+=("train scratch preset      $(train_speed "$SMALL_RUN")")
SUMMARY+=("generate scratch preset   $(generate_speed "run:$SMALL_RUN")")

echo "== 2. a GPT-2-size model, all weights =="
GPT2_DIR=$("$PY" - "$GPT2_LAYERS" "$GPT2_WIDTH" "$GPT2_HEADS" <<'EOF'
import sys
from transformers import GPT2Config, GPT2LMHeadModel
from engine.datasets import open_dataset
from engine.errors import ModelSourceError
from engine.home import workbench_home
from engine.models import load_model, train_tokenizer

layers, width, heads = map(int, sys.argv[1:])
if layers == 12:
    try:
        load_model("gpt2", device="cpu")
        print("gpt2")
        sys.exit(0)
    except ModelSourceError:
        pass
tokenizer = train_tokenizer(open_dataset("fables"), vocab_size=8192)
config = GPT2Config(vocab_size=len(tokenizer), n_layer=layers, n_embd=width, n_head=heads,
                    bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
directory = workbench_home() / "gpt2-size-random"
GPT2LMHeadModel(config).save_pretrained(directory)
tokenizer.save_pretrained(directory)
print(directory)
EOF
)
echo "model: $GPT2_DIR"
train --model "$GPT2_DIR" "${FINE[@]}" --steps "$FINE_STEPS" --lr 6e-5 --name "gpu check gpt2-size"
FINE_RUN=$RUN
round_trip "$FINE_RUN"
SUMMARY+=("train GPT-2-size          $(train_speed "$FINE_RUN")")
SUMMARY+=("generate GPT-2-size       $(generate_speed "run:$FINE_RUN")")

echo "== 3. LoRA adapters on it, with gradient checkpointing =="
train --model "$GPT2_DIR" "${FINE[@]}" --steps "$FINE_STEPS" --lr 1e-3 --lora --gradient-checkpointing \
    --name "gpu check lora"
LORA_RUN=$RUN
round_trip "$LORA_RUN"
SUMMARY+=("train GPT-2-size, LoRA    $(train_speed "$LORA_RUN")")

if [[ "$GPUS" -ge 2 || "${GPU_CHECK_CPU:-0}" == 1 ]]; then
    echo "== 4. scratch preset as 2 processes =="
    train "${SMALL[@]}" --steps "$SMALL_STEPS" --nproc 2 --name "gpu check ddp"
    SUMMARY+=("train scratch preset, x2  $(train_speed "$RUN") (all processes)")
else
    echo "== 4. skipped: one GPU (--nproc 2 needs two) =="
fi

echo "== 6. the GPT-2-size model at block size 1024, bf16: compiled and not =="
for compiled in off on; do
    train --model "$GPT2_DIR" --dataset fables --block-size "$SPEED_BLOCK" --batch-size "$SPEED_BATCH" \
        --grad-accum 4 --steps "$SPEED_STEPS" --lr 6e-5 --compile "$compiled" --name "gpu check speed, compile $compiled"
    SUMMARY+=("train GPT-2-size, compile $compiled   $(train_speed "$RUN")")
done

echo
echo "gpu_check: all checks passed on $DEVICE"
printf '  %s\n' "${SUMMARY[@]}"
