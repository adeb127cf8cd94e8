#!/usr/bin/env bash
# The accelerator checks, as one prepared run on a machine with a GPU (or TPU):
#   1. the Pallas kernel compiled for the device (not interpret mode) against the XLA path, and
#      the layer tests, outputs and gradients;
#   2. benchmarks/cell.py on GRU4Rec's shapes, float32 and bfloat16, with the Pallas path and
#      PyTorch's cuDNN nn.GRU when torch is importable, and the matmul floor;
#   3. benchmarks/train_throughput.py on the generated dataset (the shared datasets may not be
#      on that machine).
# Each stage has its own time limit (580 s in all, to fit one 10-minute call), so that one slow
# stage cannot use up a short lease; the cell benchmark writes its JSON after every shape.
# Logs and JSON go to $OUT (or runs/benchmarks/device/ when OUT is unset; the recorded tables in
# benchmarks/results/ are updated by hand from them). Needs the package's
# dependencies installed; it runs from a source checkout without installing the package.
#
#     bash benchmarks/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/benchmarks/device}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
status=0

stage() {  # stage NAME SECONDS COMMAND...: runs COMMAND under a limit, logs to $out/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc"
    [ "$rc" -eq 0 ] || status=1
}

stage device_env 30 "$python" -c "
import jax, flax, optax
print('devices', jax.devices(), 'backend', jax.default_backend())
if jax.default_backend() == 'cpu':
    print('WARNING: no accelerator found; the figures below are CPU figures')
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__)
try:
    import torch
    print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
except ImportError:
    print('torch not importable')
"
# -W default: the device's newer JAX or Flax may warn where ours does not; a warning there should
# be read in the log, not fail the numerical checks (pyproject.toml makes warnings errors).
stage device_tests 180 "$python" -m pytest -q -p no:cacheprovider -W default \
    tests/test_kernel_pallas.py tests/nn
stage device_cell 270 "$python" benchmarks/cell.py \
    --batch 128 512 --hidden 100 256 512 --steps 20 --dtypes float32 bfloat16 \
    --impls gru_jax "gru_jax[hoist=F]" "gru_jax[pallas]" nnx linen torch matmuls \
    --repeats 7 --out "$out"
# The training stack also needs polars and tqdm, which an accelerator image may lack.
if "$python" -c "import polars, tqdm" 2>/dev/null; then
    stage device_train 100 "$python" benchmarks/train_throughput.py --synthetic \
        --preset synthetic --out "$out"
else
    echo "== device_train skipped: polars or tqdm is not importable (install or carry them)"
fi
exit $status
