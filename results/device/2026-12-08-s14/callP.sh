# fourteenth session, call P (what ~450 s of device time allows): the GPU tests of the code that has never run on a
# GPU (twelfth session's one-chunk fix, thirteenth's numba-free load path, fourteenth's TP slices); a fresh process's
# first load by phase against safetensors (numba imported?); where a warm load of the default file spends its time
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
TOTAL=${TOTAL:-430}
T0=$(date +%s); nvidia-smi -L; uptime; echo "commit $(cat devcarry/COMMIT)"
timeout 140 python -m pytest -q -p no:cacheprovider -n 8 tests/test_gpu_load.py tests/test_gpu_ans.py tests/test_gpu_dq.py tests/test_gpu_cuda.py tests/test_gpu.py tests/test_tp.py > $OUT/t_gpu.txt 2>&1
echo "t_gpu rc $? at $(( $(date +%s) - T0 )) s"; grep -i "passed\|failed\|error" $OUT/t_gpu.txt | tail -10
timeout 80 python devcarry/first_load.py make > $OUT/fl_make.txt 2>&1; echo "make rc $? at $(( $(date +%s) - T0 )) s"
for i in 1 2; do
  [ $(( TOTAL - ($(date +%s) - T0) )) -lt 200 ] && break
  timeout 30 python devcarry/first_load2.py st >> $OUT/first_load2.txt 2>&1
  timeout 30 python devcarry/first_load2.py bsl >> $OUT/first_load2.txt 2>&1
done
grep "^st \|^bsl " $OUT/first_load2.txt; grep -i "error" $OUT/first_load2.txt | head -5
LEFT=$(( TOTAL - ($(date +%s) - T0) )); echo "prof_load with $LEFT s at $(( $(date +%s) - T0 )) s"
[ $LEFT -gt 60 ] && timeout $LEFT python devcarry/prof_load.py > $OUT/prof_load.txt 2>&1
echo "prof_load rc $? at $(( $(date +%s) - T0 )) s"; grep -v Warn $OUT/prof_load.txt | head -70 | cut -c1-180
