# twelfth session, call A: bslcodec.gpu without CuPy (gpu/_cuda.py): GPU tests; a fresh process's first load, new vs old (CuPy)
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
T0=$(date +%s); echo "commit $(cat devcarry/COMMIT)"; nvidia-smi -L; uptime
python -c "import torch; print(torch.__version__, torch.version.cuda)"
timeout 90 python -m pytest -q -p no:cacheprovider tests/test_gpu_cuda.py > $OUT/t_cuda.txt 2>&1; echo "t_cuda rc $? at $(( $(date +%s) - T0 )) s"; tail -15 $OUT/t_cuda.txt
timeout 90 python devcarry/first_load.py make > $OUT/fl_make.txt 2>&1; echo "make rc $? at $(( $(date +%s) - T0 )) s"; tail -2 $OUT/fl_make.txt
for i in 1 2 3; do
  timeout 40 python devcarry/first_load.py st >> $OUT/first_load.txt 2>&1
  timeout 40 python devcarry/first_load.py bsl >> $OUT/first_load.txt 2>&1
  PYTHONPATH=$PWD/devcarry/old:/tmp/site timeout 60 python devcarry/first_load.py bsl >> $OUT/first_load_old.txt 2>&1
done
grep "^st \|^bsl " $OUT/first_load.txt; echo "old (CuPy):"; grep "^bsl " $OUT/first_load_old.txt; tail -3 $OUT/first_load_old.txt | grep -i error
FL_PROF=1 timeout 40 python devcarry/first_load.py bsl > $OUT/first_load_prof.txt 2>&1
echo "first loads done at $(( $(date +%s) - T0 )) s"
timeout 150 python devcarry/ab_slots.py > $OUT/ab_slots.txt 2>&1; echo "ab_slots rc $? at $(( $(date +%s) - T0 )) s"; grep -v Warn $OUT/ab_slots.txt | tail -16
LEFT=$(( 570 - ($(date +%s) - T0) ))
timeout $LEFT python -m pytest -q -p no:cacheprovider -n 6 tests/test_gpu.py tests/test_gpu_ans.py tests/test_gpu_dq.py tests/test_gpu_load.py tests/test_fexp.py tests/test_compressed.py tests/test_tp.py tests/test_hostile_writers.py > $OUT/t_gpu.txt 2>&1
echo "t_gpu rc $? at $(( $(date +%s) - T0 )) s"; grep -i "passed\|failed\|error" $OUT/t_gpu.txt | tail -25
