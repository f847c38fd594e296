# twelfth session, call C (what the last 324 s of budget allow): GPU load tests after the one-chunk fix; a fresh
# process's first load by phase (new tree; safetensors beside)
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
T0=$(date +%s); nvidia-smi -L
timeout 125 python -m pytest -q -p no:cacheprovider -n 8 tests/test_gpu_load.py > $OUT/t_gpu_load.txt 2>&1
echo "t_gpu_load rc $? at $(( $(date +%s) - T0 )) s"; grep -i "passed\|failed\|error" $OUT/t_gpu_load.txt | tail -8
timeout 80 python devcarry/first_load.py make > $OUT/fl_make.txt 2>&1; echo "make rc $? at $(( $(date +%s) - T0 )) s"
for i in 1 2; do
  timeout 25 python devcarry/first_load2.py st >> $OUT/first_load2.txt 2>&1
  timeout 25 python devcarry/first_load2.py bsl >> $OUT/first_load2.txt 2>&1
done
grep "^st \|^bsl " $OUT/first_load2.txt; grep -i "error" $OUT/first_load2.txt | head -3; echo "done at $(( $(date +%s) - T0 )) s"
