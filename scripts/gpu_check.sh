#!/usr/bin/env bash
# The GPU check of issue 14, part 2: everything the CUDA WKV kernel has to show on a GPU, in one
# run of under 6 minutes that writes its results into one folder.
#
# Needs only what the lent GPU machine has (CUDA PyTorch, Python, nvcc, compute-sanitizer; no
# network, no hivemind) plus a folder of small wheels brought along for the comparison with fla:
#
#   prep, once, on a machine with network:  make gpu-wheels    (fla-core and einops into
#                                            build/gpu-wheels/, which git ignores)
#   on the GPU machine:                      bash scripts/gpu_check.sh
#
# Our source is not installed: a folder $WORK/pkg/gpt5os/model linking to model/ makes
# `gpt5os.model` importable, and imports of the project's other dependencies (hivemind, grpc,
# ...) are made to fail, so that a step that needs them fails here as it would there.
# Without a CUDA device the CUDA steps report "skipped" and the script still exits 0: that is
# the rehearsal on a CPU machine. Results: $OUT if set (the device tool's folder), else
# build/gpu-check-out; seven files at most (the device tool brings back eight):
#   summary.txt  one line per step: ok / FAILED / TIMED OUT / skipped / NOT RUN (budget)
#   setup.log    machine, versions, wheel install, extension build
#   pytest.log   pytest -m gpu on tests/test_model_cuda.py
#   checks.log   T=1000 accuracy at the decay clamp; B=8 T=4096 H=32 launch and peak memory
#   sanitizer.log compute-sanitizer racecheck and memcheck on B=2 T=33 H=3
#   bench-wkv.log bench/wkv.py --device cuda beside fla's chunk_rwkv7
#   bench-train.log bench/train_step.py 0.1b and 0.4b, RWKV-7 beside a same-size GPT
# Exit status: 0 when every step passed or was skipped, 1 when one failed or timed out.
# GPU_CHECK_BUDGET_S (default 330) bounds the whole run: a step gets at most what is left.
# GPU_CHECK_STEPS picks steps for a second, confirming run (default: all of them, in this order):
#   "pytest accuracy realistic sanitizer bench-wkv bench-train"; the build always runs.

set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=${OUT:-$REPO/build/gpu-check-out}
BUDGET_S=${GPU_CHECK_BUDGET_S:-330}
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$REPO/build/gpu-wheels}
STEPS=${GPU_CHECK_STEPS:-pytest accuracy realistic sanitizer bench-wkv bench-train}
# A fixed folder, so that a second run on the same machine reuses the built extension.
WORK=${GPU_CHECK_WORK:-/tmp/gpt5os-gpu-check}
START=$SECONDS
FAILED=0
cd "$REPO" || exit 1

mkdir -p "$OUT_DIR" "$WORK/pkg/gpt5os" "$WORK/site" "$WORK/block"
SUMMARY=$OUT_DIR/summary.txt
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME LOG MAX_S CMD...: run CMD into LOG with the smaller of MAX_S and the budget left.
step() {
  local name=$1 logname=$2 logf=$OUT_DIR/$2 max=$3
  shift 3
  local left=$((BUDGET_S - (SECONDS - START)))
  if ((left < 15)); then
    note "$name: NOT RUN (the ${BUDGET_S}s budget is spent)"
    FAILED=1
    return
  fi
  local limit=$((max < left ? max : left)) t0=$SECONDS rc=0
  echo "=== $name: $* (limit ${limit}s, $(date -u +%FT%TZ))" >>"$logf"
  timeout -k 10 "$limit" "$@" >>"$logf" 2>&1 || rc=$?
  if ((rc == 0)); then
    note "$name: ok ($((SECONDS - t0))s)"
  elif ((rc == 124 || rc == 137)); then
    note "$name: TIMED OUT after ${limit}s (see $logname)"
    FAILED=1
  else
    note "$name: FAILED with exit status $rc after $((SECONDS - t0))s (see $logname)"
    FAILED=1
  fi
}

skip() { note "$1: skipped (no CUDA device)"; }

# -- our source, the wheels, the import blocker ---------------------------------------------------
ln -sfn "$REPO/model" "$WORK/pkg/gpt5os/model"
cat >"$WORK/block/sitecustomize.py" <<'PYEOF'
"""gpu_check.sh: the project's other dependencies are absent on the GPU machine; make their
import fail everywhere, so that the rehearsal on a full machine proves the steps do without."""
import sys
from importlib.abc import MetaPathFinder

BLOCKED = {"hivemind", "grpc", "bitsandbytes", "textual", "rwkv"}


class _Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked by gpu_check.sh (absent on the GPU machine)")
        return None


sys.meta_path.insert(0, _Block())
PYEOF
export PYTHONPATH="$WORK/block:$WORK/pkg:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TORCH_EXTENSIONS_DIR="$WORK/torch_extensions"

{
  echo "=== setup $(date -u +%FT%TZ) on $(uname -n), load: $(cut -d' ' -f1-3 /proc/loadavg)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
  nvcc --version 2>&1 | tail -1 || echo "no nvcc"
  compute-sanitizer --version 2>&1 | head -2 || echo "no compute-sanitizer"
  git -C "$REPO" log -1 --format='source: %h %s' 2>/dev/null || echo "source: not a git checkout"
} >>"$OUT_DIR/setup.log" 2>&1
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  step "wheels (fla-core, einops)" setup.log 60 "$PY" -m pip install -q --no-index --no-deps \
    --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl
else
  note "wheels: none in $WHEELS (make gpu-wheels): the fla comparison will be missing"
fi
# One interpreter start (torch imports slowly): versions into setup.log, then 1 or 0 for CUDA.
PROBE=$("$PY" -c "import sys, torch; c = torch.cuda.is_available(); print('python', \
sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'device', \
torch.cuda.get_device_name() if c else None); print(int(c))" 2>>"$OUT_DIR/setup.log")
echo "${PROBE%$'\n'*}" >>"$OUT_DIR/setup.log"
HAS_CUDA=${PROBE##*$'\n'}
[[ $HAS_CUDA == 1 ]] || HAS_CUDA=0
# GPU_CHECK_ASSUME_CUDA=1 rehearses the control flow on a CPU machine: the CUDA steps run (and
# fail there), so failures, time-outs and the budget are seen to be reported.
[[ ${GPU_CHECK_ASSUME_CUDA:-0} == 1 ]] && HAS_CUDA=1
if [[ $HAS_CUDA == 1 && -z ${TORCH_CUDA_ARCH_LIST:-} ]]; then  # build for this GPU only
  TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null)
  [[ -n $TORCH_CUDA_ARCH_LIST ]] && export TORCH_CUDA_ARCH_LIST || unset TORCH_CUDA_ARCH_LIST
fi

# -- the steps, most important first --------------------------------------------------------------
want() { [[ " $STEPS " == *" $1 "* ]]; }
cuda_step() {  # cuda_step KEY: whether to run step KEY here (it is wanted and a GPU is present)
  want "$1" || return 1
  [[ $HAS_CUDA == 1 ]] && return 0
  skip "$1"
  return 1
}
if [[ $HAS_CUDA == 1 ]]; then  # always: the other CUDA steps need it (cached after the first run)
  step "build the extension" setup.log 240 "$PY" scripts/gpu_check.py build
else
  skip "build the extension"
fi
# Runs without CUDA too: collection and imports must work with hivemind & co. blocked.
# Plugins are not autoloaded (the GPU machine's differ from ours, and some import textual) and
# conftest.py files are ignored (one may import hivemind; these tests need none).
if want pytest; then
  step "pytest -m gpu" pytest.log 150 env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$PY" -m pytest -q -ra \
    -p no:cacheprovider --noconftest -m gpu -o addopts="" tests/test_model_cuda.py
fi
if cuda_step accuracy; then
  step "T=1000 accuracy at w=0.5452 (accuracy)" checks.log 60 "$PY" scripts/gpu_check.py accuracy
fi
if cuda_step realistic; then
  step "B=8 T=4096 H=32 launch and memory (realistic)" checks.log 60 \
    "$PY" scripts/gpu_check.py realistic
fi
if cuda_step sanitizer; then
  if command -v compute-sanitizer >/dev/null; then
    FILTER=()  # instrument only our kernels (kns: a substring of the kernel name), where supported
    compute-sanitizer --help 2>&1 | grep -q -- --kernel-name && FILTER=(--kernel-name kns=wkv7)
    for tool in racecheck memcheck; do  # no caching allocator: memcheck sees each buffer's bounds
      step "compute-sanitizer $tool (sanitizer)" sanitizer.log 75 \
        env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 3 \
        ${FILTER[@]+"${FILTER[@]}"} "$PY" scripts/gpu_check.py small
    done
  else
    note "sanitizer: compute-sanitizer is not on this machine"
  fi
fi
if cuda_step bench-wkv; then
  step "bench/wkv.py --device cuda (bench-wkv)" bench-wkv.log 120 "$PY" bench/wkv.py \
    --device cuda --repeat 5 --sizes 8,4096,64,64 8,1024,32,64
fi
if cuda_step bench-train; then
  for preset in 0.1b 0.4b; do
    step "bench/train_step.py $preset (bench-train)" bench-train.log 100 "$PY" bench/train_step.py \
      --device cuda --preset "$preset" --seq-len 4096 --batch 4 --steps 4 --warmup 2
  done
fi

note "total $((SECONDS - START))s; results in $OUT_DIR"
exit $FAILED
