# thirteenth session, call T (what ~400 s of device time allows): GPU tests of the numba-free load path (and the
# twelfth session's one-chunk fix); a fresh process's first .bsl load by phase against safetensors (numba imported?)
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
TOTAL=${TOTAL:-380}
T0=$(date +%s); nvidia-smi -L; uptime
timeout 140 python -m pytest -q -p no:cacheprovider -n 8 tests/test_gpu_load.py tests/test_gpu_ans.py tests/test_gpu_dq.py tests/test_gpu_cuda.py tests/test_gpu.py > $OUT/t_gpu.txt 2>&1
echo "t_gpu rc $? at $(( $(date +%s) - T0 )) s"; grep -i "passed\|failed\|error" $OUT/t_gpu.txt | tail -10
timeout 80 python devcarry/first_load.py make > $OUT/fl_make.txt 2>&1; echo "make rc $? at $(( $(date +%s) - T0 )) s"
for i in 1 2 3; do
  [ $(( TOTAL - ($(date +%s) - T0) )) -lt 45 ] && break
  timeout 30 python devcarry/first_load2.py st >> $OUT/first_load2.txt 2>&1
  timeout 30 python devcarry/first_load2.py bsl >> $OUT/first_load2.txt 2>&1
done
grep "^st \|^bsl " $OUT/first_load2.txt; grep -i "error" $OUT/first_load2.txt | head -5
LEFT=$(( TOTAL - ($(date +%s) - T0) )); echo "ab_slots with $LEFT s at $(( $(date +%s) - T0 )) s"
[ $LEFT -gt 60 ] && timeout $LEFT python devcarry/ab_slots.py > $OUT/ab_slots.txt 2>&1; grep -v Warn $OUT/ab_slots.txt | tail -16
echo "done at $(( $(date +%s) - T0 )) s"
