# twelfth session, call A: bslcodec.gpu without CuPy (gpu/_cuda.py) and without numba calls on the host side:
# launcher tests; a fresh process's first load, new vs old (CuPy, numba); GPU load tests; replica cold start at 2 GB/s
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
T0=$(date +%s); echo "commit $(cat devcarry/COMMIT)"; nvidia-smi -L; uptime
python -c "import torch; print(torch.__version__, torch.version.cuda)"
timeout 60 python -m pytest -q -p no:cacheprovider tests/test_gpu_cuda.py > $OUT/t_cuda.txt 2>&1; echo "t_cuda rc $? at $(( $(date +%s) - T0 )) s"; tail -15 $OUT/t_cuda.txt
timeout 90 python devcarry/first_load.py make > $OUT/fl_make.txt 2>&1; echo "make rc $? at $(( $(date +%s) - T0 )) s"; tail -2 $OUT/fl_make.txt
for i in 1 2 3; do
  timeout 40 python devcarry/first_load.py st >> $OUT/first_load.txt 2>&1
  timeout 40 python devcarry/first_load.py bsl >> $OUT/first_load.txt 2>&1
  PYTHONPATH=$PWD/devcarry/old:/tmp/site timeout 60 python devcarry/first_load.py bsl >> $OUT/first_load_old.txt 2>&1
done
grep "^st \|^bsl " $OUT/first_load.txt; echo "old (CuPy):"; grep "^bsl " $OUT/first_load_old.txt; grep -i "error" $OUT/first_load.txt | head -5
echo "first loads done at $(( $(date +%s) - T0 )) s"
timeout 170 python -m pytest -q -x -p no:cacheprovider -n 8 tests/test_gpu_load.py tests/test_gpu_ans.py tests/test_gpu_dq.py > $OUT/t_gpu.txt 2>&1
echo "t_gpu rc $? at $(( $(date +%s) - T0 )) s"; grep -i "passed\|failed\|error" $OUT/t_gpu.txt | tail -12
LEFT=$(( 585 - ($(date +%s) - T0) ))
echo "serve deadline $LEFT s"
PYTHONPATH=/tmp/site_serve:$PYTHONPATH timeout -s TERM $LEFT python tools/bench/bench_serve.py --accelerator cuda --model synthetic --config-dir devcarry/tinycfg --rates 2 --repeats 6 --bits 4 --deadline $(( LEFT - 15 )) --work /tmp/serve_big --out $OUT/serve_cuda_1b.md > $OUT/serve.log 2>&1
echo "serve rc $? at $(( $(date +%s) - T0 )) s"; grep -v "Loading weights" $OUT/serve.log | tail -c 4000
