# thirteenth session, call G (the last ~200 s of device time): the GPU tests of the numba-free load path and of the
# twelfth session's one-chunk fix, then one fresh-process first load of each format if time is left
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
T0=$(date +%s); nvidia-smi -L
timeout 120 python -m pytest -q -p no:cacheprovider -n 8 tests/test_gpu_load.py tests/test_gpu_ans.py tests/test_gpu_cuda.py tests/test_gpu.py > $OUT/t_gpu.txt 2>&1
echo "t_gpu rc $? at $(( $(date +%s) - T0 )) s"; grep -i "passed\|failed\|error" $OUT/t_gpu.txt | tail -10
timeout 40 python devcarry/first_load.py make > $OUT/fl_make.txt 2>&1 && timeout 25 python devcarry/first_load2.py st > $OUT/first_load2.txt 2>&1 && timeout 25 python devcarry/first_load2.py bsl >> $OUT/first_load2.txt 2>&1
grep "^st \|^bsl " $OUT/first_load2.txt; echo "done at $(( $(date +%s) - T0 )) s"
