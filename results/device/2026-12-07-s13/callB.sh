# thirteenth session, call B (from the twelfth): GPU load tests after the one-chunk fix; a fresh process's first load by phase, new vs old
# (CuPy); GPU loader staging A/B (cold, warm); the rest of the GPU tests as time allows
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
T0=$(date +%s); nvidia-smi -L; uptime
timeout 170 python -m pytest -q -p no:cacheprovider -n 8 tests/test_gpu_load.py tests/test_gpu_ans.py tests/test_gpu_dq.py tests/test_gpu_cuda.py > $OUT/t_gpu.txt 2>&1
echo "t_gpu rc $? at $(( $(date +%s) - T0 )) s"; grep -i "passed\|failed\|error" $OUT/t_gpu.txt | tail -8
timeout 90 python devcarry/first_load.py make > $OUT/fl_make.txt 2>&1; echo "make rc $? at $(( $(date +%s) - T0 )) s"
for i in 1 2 3; do
  timeout 40 python devcarry/first_load2.py st >> $OUT/first_load2.txt 2>&1
  timeout 40 python devcarry/first_load2.py bsl >> $OUT/first_load2.txt 2>&1
  PYTHONPATH=$PWD/devcarry/old:/tmp/site timeout 60 python devcarry/first_load2.py bsl >> $OUT/first_load2_old.txt 2>&1
done
grep "^st \|^bsl " $OUT/first_load2.txt; echo "old (CuPy):"; grep "^bsl " $OUT/first_load2_old.txt; grep -i "error" $OUT/first_load2*.txt | head -5
echo "first loads done at $(( $(date +%s) - T0 )) s"
timeout 110 python devcarry/ab_slots.py > $OUT/ab_slots.txt 2>&1; echo "ab_slots rc $? at $(( $(date +%s) - T0 )) s"; grep -v Warn $OUT/ab_slots.txt | tail -16
LEFT=$(( 445 - ($(date +%s) - T0) ))
[ $LEFT -gt 40 ] && timeout $LEFT python -m pytest -q -p no:cacheprovider -n 8 tests/test_gpu.py tests/test_fexp.py tests/test_hf.py \
  tests/test_compressed.py tests/test_tp.py > $OUT/t_gpu2.txt 2>&1
echo "t_gpu2 rc $? at $(( $(date +%s) - T0 )) s"; grep -i "passed\|failed\|error" $OUT/t_gpu2.txt | tail -15
