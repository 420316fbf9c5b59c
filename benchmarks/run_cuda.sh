#!/usr/bin/env bash
# The GPU checks (issues 12 and 19), for a machine with a CUDA device: the CUDA tests (compiled steps
# included), then bench_cg, bench_denoising (random clips of the config's size: the video data stays on the
# CPU machines; the batch of 512 clips issue 19 targets) and bench_attention on cuda, their compiled rows in
# reduce-overhead mode (Inductor's Triton kernels replayed as CUDA graphs). Results go to $OUT (default
# benchmarks/results) as *_cuda.json.
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
$PY benchmarks/bench_denoising.py --device cuda --data random --compile reduce-overhead \
    --out "$OUT/bench_denoising_cuda.json" || status=1
$PY benchmarks/bench_denoising.py --device cuda --data random --batch-size 512 --compile reduce-overhead \
    --out "$OUT/bench_denoising_cuda_b512.json" || status=1
$PY benchmarks/bench_attention.py --device cuda --compile reduce-overhead --out "$OUT/bench_attention_cuda.json" || status=1
exit $status
