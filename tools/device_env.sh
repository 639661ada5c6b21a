# Source on the GPU machine, in the repository root: the packages from source (no install step there) and the
# trimmed ProteinMPNN of tools/device_carry.sh; unbuffered output for the device tool's output_tail.
export PYTHONPATH="$PWD/.gpu/site:$PWD/packages/reed-core/src:$PWD/packages/reed-protein/src:$PWD/packages/reed-molecule/src:$PWD/packages/reed-image/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
