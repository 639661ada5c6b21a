#!/usr/bin/env bash
# One device call that does a whole GPU session's work, sized for the device tool's 15 minutes per session (a fresh
# machine's start and the transfers count too, so the command itself gets about 9 minutes, and there is no time
# left for a second machine). From the device tool, after `tools/device_carry.sh molecule` (or protein) here:
#
#   command:   source tools/device_env.sh; tools/gpu_call.sh molecule        (or: protein)
#   carry:     what device_carry.sh printed          timeout_s: 590
#
# molecule: times one training step of the paper and small presets (fp32 and bf16 autocast; issue 11's GPU
#   throughput), then continues the shipped model (`train --init shipped`, REED, t = u^2 as its CPU cycles 4-6)
#   at a larger batch for the rest of the budget, its best validation-loss weights kept.
# protein: continues the shipped model (`train --init shipped --method vanilla --distill 40 --mpnn-noise 002`, as its
#   CPU cycles 8-18: v_48_002's profile at weight 40, weight decay 0.05 and the shipped dropout 0.15 as cycle 18;
#   carry its weights, device_carry.sh's default)
#   at batch 32, its best validation-recovery weights kept (ProteinMPNN's profile cache is built first).
# Either way $OUT gets best/{ema.safetensors,config.json} (what `--init DIR`, `sample` / `eval --checkpoint DIR` and
# the benchmarks read), metrics.jsonl, validation.jsonl, and this script's log (plus throughput.jsonl for
# molecules): 6 files at most. Score them back here as docs/GPU_RUNS.md says.
#
# Settings from the environment: GPU_CALL_SECONDS (the whole command's budget, default 540), GPU_CALL_BATCH,
# GPU_CALL_LR, GPU_CALL_STEPS (protein), GPU_CALL_EXTRA (more `train` arguments, e.g. `--train-limit 400` for a CPU
# smoke test), GPU_CALL_DEVICE (default cuda when torch sees one, else cpu: the CPU run is the smoke test), PYTHON
# (default python3), OUT (default ./gpu_out when the device tool did not set it).
set -uo pipefail
what=${1:?usage: tools/gpu_call.sh molecule|protein}
[[ $what == molecule || $what == protein ]] || { echo "tools/gpu_call.sh: molecule or protein, got '$what'" >&2; exit 2; }
py=${PYTHON:-python3}
out=${OUT:-$PWD/gpu_out}
budget=${GPU_CALL_SECONDS:-540}
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
mkdir -p "$out" runs
log=$out/gpu_call_$what.log
exec > >(tee -a "$log") 2>&1
device=${GPU_CALL_DEVICE:-$($py -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
echo "== gpu_call $what: budget ${budget}s, device $device, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

guard() {  # the teacher caches are built before --time-budget starts counting: past the budget, Ctrl-C (SIGINT:
  # the trainer finishes its step, checkpoints and stops), then kill; copy_back runs either way
  timeout -s INT -k 20 $(( $(left) - 35 )) "$@"
}

copy_back() {  # what must outlive the machine; safe to call when training stopped early or failed
  local run=$1
  mkdir -p "$out/best"
  for f in metrics.jsonl validation.jsonl; do [[ -f $run/$f ]] && cp "$run/$f" "$out/"; done
  if [[ -f $run/best/ema.safetensors ]]; then
    cp "$run/best/ema.safetensors" "$run/best/config.json" "$out/best/"
  else
    echo "no best/ checkpoint in $run (no validation ran)"; rmdir "$out/best" 2>/dev/null
  fi
  echo "== $(( $(date +%s) - start ))s used; in $out:"; ls -la "$out" "$out/best" 2>/dev/null
}

if [[ $what == molecule ]]; then
  pack=packages/reed-molecule/data/qm9_pack.npz
  [[ -f $pack ]] || { echo "no $pack: carry it (tools/device_carry.sh molecule)"; exit 2; }
  probe=$out/throughput.jsonl
  if [[ $device == cuda ]]; then  # issue 11: steps/s of the paper preset on the GPU, fp32 vs bf16 autocast
    for spec in "paper 32 fp32" "paper 32 bf16" "paper 128 bf16" "small 32 fp32" "small 128 fp32" "small 128 bf16"; do
      (( $(left) > budget - 100 )) || { echo "probe time used up: skipping $spec and the rest"; break; }
      read -r preset batch precision <<< "$spec"
      timeout 40 $py packages/reed-molecule/scripts/time_step.py --preset "$preset" --batch-size "$batch" \
        --precision "$precision" --steps 12 --device cuda --json "$probe" || echo "probe $spec failed"
    done
  fi
  batch=${GPU_CALL_BATCH:-$([[ $device == cuda ]] && echo 128 || echo 8)}
  lr=${GPU_CALL_LR:-2e-4}
  # the cosine schedule needs a step count: the small preset's measured step time, 0.7 of it (REED's alignment and
  # the validation passes cost more than the bare step), over what is left less 60 s for validation and copying
  sps=$($py packages/reed-molecule/scripts/time_step.py --preset small --batch-size "$batch" --steps 6 \
        --device "$device" --threads 0 --json "$probe" | sed -n 's/.*: \([0-9.]*\) s\/step.*/\1/p')
  train_s=$(( $(left) - 60 ))
  (( train_s >= 60 )) || { echo "only ${train_s}s left for training: raise GPU_CALL_SECONDS"; exit 1; }
  steps=$($py -c "print(max(20, int(0.7 * $train_s / max(${sps:-1}, 1e-3))))")
  every=$(( steps / 8 > 0 ? steps / 8 : 1 ))
  # best weights by the molecule stability of sampled molecules: on the CPU cycles the validation loss stopped
  # predicting sample quality (cycle 8: loss 0.7907 -> 0.7905, every sampled rate lower)
  samples=$([[ $device == cuda ]] && echo 500 || echo 8)
  echo "== training: $steps steps at batch $batch (probe ${sps:-?} s/step), budget ${train_s}s, validation every $every ($samples samples)"
  guard $py -m reed_molecule.cli train --init shipped --method reed --time-power 2 --pack --steps "$steps" \
    --batch-size "$batch" --lr "$lr" --lr-decay cosine --lr-final 0.04 --seed 7 --eval-every "$every" \
    --eval-samples "$samples" --select-on mol_stable \
    --device "$device" --time-budget "${train_s}s" --out runs/mol_gpu ${GPU_CALL_EXTRA:-}
  echo "train exit $?"
  copy_back runs/mol_gpu
else
  batch=${GPU_CALL_BATCH:-$([[ $device == cuda ]] && echo 32 || echo 2)}
  lr=${GPU_CALL_LR:-6e-4}  # CPU cycle 3 levelled off at 1.5e-4, cycle 4 kept rising at 4e-4, cycles 9-13 gained at 6e-4 (batch 8)
  train_s=$(( $(left) - 45 ))
  (( train_s >= 60 )) || { echo "only ${train_s}s left for training: raise GPU_CALL_SECONDS"; exit 1; }
  steps=${GPU_CALL_STEPS:-$([[ $device == cuda ]] && echo 2000 || echo 4)}
  every=$(( steps / 8 > 0 ? steps / 8 : 1 ))
  chains=$([[ $device == cuda ]] && echo 200 || echo 4)
  echo "== training: $steps steps at batch $batch, budget ${train_s}s (the profile cache first), validation every $every on $chains chains"
  guard $py -m reed_protein.cli train --init shipped --method vanilla --distill 40 --mpnn-noise 002 --steps "$steps" --batch-size "$batch" \
    --lr "$lr" --lr-decay cosine --lr-final 0.1 --weight-decay 0.05 --seed 7 --eval-every "$every" --eval-chains "$chains" \
    --device "$device" --cache-dir runs/teacher_cache --time-budget "${train_s}s" --out runs/prot_gpu ${GPU_CALL_EXTRA:-}
  echo "train exit $?"
  copy_back runs/prot_gpu
fi
