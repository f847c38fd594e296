# serve: bench_serve 1.1B TinyLlama-shaped, more repeats (issue 23)
source devcarry/setup.sh
PYTHONPATH=/tmp/site_serve:$PYTHONPATH timeout -s TERM 540 python tools/bench/bench_serve.py --accelerator cuda --model synthetic --config-dir devcarry/tinycfg --rates 2,1 --repeats 4 --bits 4 --deadline 520 --work /tmp/serve_big --out $OUT/serve_cuda_1b.md 2>&1 | grep -v "Loading weights" | tail -50
