#!/usr/bin/env bash
# The GPU checks (issue 12, part 3), for a machine with a CUDA device: the CUDA tests, then bench_cg,
# bench_denoising (random clips of the config's size: the video data stays on the CPU machines) and
# bench_attention on cuda. Results go to $OUT (default benchmarks/results) as *_cuda.json.
#
#   OUT=benchmarks/results bash benchmarks/run_cuda.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
nvidia-smi -L || status=1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" || exit 1
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.log" || status=1
$PY benchmarks/bench_cg.py --device cuda --out "$OUT/bench_cg_cuda.json" || status=1
$PY benchmarks/bench_denoising.py --device cuda --data random --out "$OUT/bench_denoising_cuda.json" || status=1
$PY benchmarks/bench_attention.py --device cuda --out "$OUT/bench_attention_cuda.json" || status=1
exit $status
