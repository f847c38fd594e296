# thirteenth session, call M: GPU tests of the numba-free load path (and the twelfth session's one-chunk fix);
# a fresh process's first .bsl load by phase (does it import numba?); replica cold start at 2 GB/s with the rest
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
TOTAL=${TOTAL:-585}  # seconds this call may use (less where less device time is left)
T0=$(date +%s); nvidia-smi -L; uptime
timeout 140 python -m pytest -q -p no:cacheprovider -n 8 tests/test_gpu_load.py tests/test_gpu_ans.py tests/test_gpu_dq.py tests/test_gpu_cuda.py tests/test_gpu.py > $OUT/t_gpu.txt 2>&1
echo "t_gpu rc $? at $(( $(date +%s) - T0 )) s"; grep -i "passed\|failed\|error" $OUT/t_gpu.txt | tail -10
timeout 80 python devcarry/first_load.py make > $OUT/fl_make.txt 2>&1; echo "make rc $? at $(( $(date +%s) - T0 )) s"
for i in 1; do
  timeout 30 python devcarry/first_load2.py st >> $OUT/first_load2.txt 2>&1
  timeout 30 python devcarry/first_load2.py bsl >> $OUT/first_load2.txt 2>&1
done
grep "^st \|^bsl " $OUT/first_load2.txt; grep -i "error" $OUT/first_load2.txt | head -5
LEFT=$(( TOTAL - ($(date +%s) - T0) )); echo "serve deadline $LEFT s at $(( $(date +%s) - T0 )) s"
PYTHONPATH=/tmp/site_serve:$PYTHONPATH timeout -s TERM $LEFT python tools/bench/bench_serve.py --accelerator cuda --model synthetic --config-dir devcarry/tinycfg --rates 2 --repeats 8 --bits 4 --deadline $(( LEFT - 15 )) --work /tmp/serve_big --out $OUT/serve_cuda_1b.md > $OUT/serve.log 2>&1
echo "serve rc $? at $(( $(date +%s) - T0 )) s"; uptime; grep -v "Loading weights" $OUT/serve.log | tail -c 4500
