#!/usr/bin/env bash
# The lab's GPU check: one command, under 8 minutes on one GPU, that installs the lab with its `gpu-cuda13` extra,
# runs the gpu-marked tests, trains PPO and DQN on CartPole and a DCGAN and WGAN-GP on MNIST briefly through
# scripts/train.py, and runs scripts/bench_gpu.py (PyTorch on the same GPU as the GAN peer), which writes the
# section bench_gpu of docs/benchmarks.md. See docs/running.md ("Checking a GPU machine").
#
#   scripts/gpu_check.sh --prepare   # on a machine with a network: the wheels the GPU machine lacks, and the
#                                    # MNIST test set, into .whl/ (git-ignored; carry it to the GPU machine)
#   scripts/gpu_check.sh             # on the GPU machine (no network): install from .whl/, then check on cuda
#   scripts/gpu_check.sh --emu       # the rehearsal: every step on the CPU stand-in device emu, no install
#
# Every step runs even when one before it failed (one GPU session should measure all it can); the exit status
# is 1 when any failed. The log and the benchmarks page go to $OUT when it is set, else to runs/gpu_check/.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=.whl
RESULTS=${OUT:-runs/gpu_check}
case "${1:-}" in
    "") DEVICE=cuda ;;
    --emu) DEVICE=emu ;;
    --prepare) DEVICE= ;;
    *) echo "usage: scripts/gpu_check.sh [--prepare | --emu]" >&2; exit 2 ;;
esac

# The GPU machine has Python 3.12, numpy, cupy-cuda13x, PyTorch, pytest, scipy, matplotlib, pillow, scikit-learn,
# tqdm and setuptools, but not these (their own needs come along as wheels too; pip keeps what is installed).
MISSING=("gymnasium>=1.0" "hydra-core>=1.3,<1.4" "tensorboardX>=2.6" "crc32c>=2.3" "pygame>=2.1" "threadpoolctl>=3")

if [ -z "$DEVICE" ]; then
    # antlr4-python3-runtime 4.9 (hydra-core's parser) is published as source only: built into a wheel here
    set -e
    mkdir -p "$WHEELS/data/mnist"
    "$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS" "antlr4-python3-runtime==4.9.*"
    "$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --find-links "$WHEELS" -d "$WHEELS" "${MISSING[@]}"
    cp "${LAB_DATA_DIR:-../shared/data}"/mnist/t10k-* "$WHEELS/data/mnist/"
    du -sh "$WHEELS"
    exit 0
fi

mkdir -p "$RESULTS"
exec > >(tee "$RESULTS/gpu_check.log") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 LAB_GPU_DEVICE=$DEVICE
DATA=$WHEELS/data
[ -d "$DATA/mnist" ] || DATA=${LAB_DATA_DIR:-../shared/data}
FAILED=()

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, note a failure and go on
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "=== $name (limit ${limit}s)"
    if timeout "$limit" "$@"; then
        echo "=== $name: ok in $((SECONDS - start))s"
    else
        echo "=== $name: FAILED (status $?) after $((SECONDS - start))s"
        FAILED+=("$name")
    fi
}

train() {  # train NAME OVERRIDES...: one short run of scripts/train.py on the device, then its metrics
    rm -rf "runs/gpu_check/$1"
    step "train-$1" 120 "$PYTHON" scripts/train.py device="$DEVICE" quiet=true hydra.run.dir="runs/gpu_check/$1" \
        "${@:2}"
    cat "runs/gpu_check/$1/metrics.json" 2>/dev/null
    echo
}

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    # the dependencies first: should the lab's own (editable) install fail, PYTHONPATH still finds it
    step install-deps 120 "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" "${MISSING[@]}"
    step install-lab 120 "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" --no-build-isolation \
        -e ".[gpu-cuda13]"
fi
step device 60 "$PYTHON" -c "
import core, numpy, sys
from core import backend
xp = backend.array_module('$DEVICE')  # fails clearly when cupy or the GPU is missing
print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'array module', xp.__name__,
      getattr(xp, '__version__', ''))
print((core.ones(3, device='$DEVICE') * 2).sum().item())"
step gpu-tests 180 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests
# one epoch of 2,048 test images (on emu 256: the CPU stand-in is slow), then the sample-quality score
if [ "$DEVICE" = cuda ]; then SIZES=(2048 2000 500); else SIZES=(256 500 200); fi
MNIST=(dataset=mnist "dataset.root=$DATA" dataset.split=test "dataset.limit=${SIZES[0]}" model.epochs=1
       model.quality.classifier_split=test "model.quality.classifier_limit=${SIZES[1]}"
       "model.quality.samples=${SIZES[2]}")
train ppo agent=ppo env=cartpole agent.total_timesteps=16384 eval_episodes=5
train dqn agent=dqn env=cartpole agent.total_timesteps=6000 eval_episodes=5
train dcgan model=dcgan "${MNIST[@]}"
train wgan_gp model=wgan_gp "${MNIST[@]}"
if [ "$DEVICE" = cuda ]; then
    step bench 240 "$PYTHON" scripts/bench_gpu.py --device cuda --write
    cp docs/benchmarks.md "$RESULTS/"
else  # the rehearsal's times mean nothing: they go into a copy of the page
    cp docs/benchmarks.md "$RESULTS/"
    step bench 240 "$PYTHON" scripts/bench_gpu.py --device emu --seeds 0 --steps 1 --repeat 1 \
        --write "$RESULTS/benchmarks.md"
fi

echo "=== done in ${SECONDS}s; failed: ${FAILED[*]:-none}"
[ ${#FAILED[@]} -eq 0 ]
