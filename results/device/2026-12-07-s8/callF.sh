# session 8 last call: #21 rate term after the transposed scan + tl.histogram (tests on the GPU, A/B), #19 CPU load to files
source devcarry/setup.sh >/dev/null 2>&1
echo "commit $(cat devcarry/COMMIT)"; nproc; date +%T
echo "== rate tests (GPU)"; timeout 150 python -m pytest -q -x tests/test_torch_rate_dq.py 2>&1 | tail -3; date +%T
echo "== rate overhead, tl.histogram"; RATE_PROFILE=$OUT/rate_profile.txt timeout 90 python tools/bench/rate_overhead.py --device cuda --steps 25 --out $OUT/ro_tl 2>&1 | grep -A6 "^NVIDIA\|^| engine"; date +%T
echo "== rate overhead, one-hot histogram"; timeout 90 python -c "
import runpy, sys
import bslcodec.torch.rate_dq_triton as t
t.HIST_TL = False
sys.argv = ['rate_overhead.py', '--device', 'cuda', '--steps', '25', '--out', '$OUT/ro_onehot']
runpy.run_path('tools/bench/rate_overhead.py', run_name='__main__')" 2>&1 | grep -A6 "^| engine"; date +%T
echo "== load stages"; timeout 110 python tools/bench/load_stages.py --side 4096 --count 8 --threads 1 2 4 8 16 > $OUT/load_stages.txt 2>&1; tail -14 $OUT/load_stages.txt; date +%T
echo "== load cpu"; timeout 80 python tools/bench/bench_load.py --cpu-only --only "default bits=4" --reps 3 > $OUT/load_cpu.txt 2>&1; tail -8 $OUT/load_cpu.txt; date +%T
