source devcarry/setup.sh
PYTHONPATH=/tmp/site_serve:$PYTHONPATH timeout -s TERM 430 python tools/bench/bench_serve.py --accelerator cuda --model synthetic --config-dir devcarry/tinycfg --rates 2,1 --repeats 3 --deadline 400 --work /tmp/serve_big --out $OUT/serve_cuda_1b.md 2>&1 | grep -v "Loading weights" | tail -40
timeout 100 python -m pytest -q -rs -p no:cacheprovider tests/test_tp.py -k "one_gpu or gpu_row_slices" 2>&1 | tail -5
