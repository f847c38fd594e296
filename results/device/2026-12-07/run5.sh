source devcarry/setup.sh
python -m pip install -q --no-index --no-deps --target /tmp/spy devcarry/py_spy*.whl; SPY=/tmp/spy/bin/py-spy; ls /tmp/spy/bin
# 1. encode benchmark (16 threads), current main
timeout 220 python tools/bench/bench_encode.py --layers 22 --threads 16 --settings "bits 4" "fixed step (rel-step 1/16)" --out $OUT/encode_16.json 2>&1 | tee $OUT/encode.log | tail -8
# 2. profile one --bits 4 encode of the 1.1B folder
python -c "import sys; sys.path.insert(0,'tools/bench'); import bench_encode as b; print(b.generate('/tmp/m11', 22))"
timeout 100 python tools/experiments/encode_timeline.py /tmp/m11 --workers 16 --out /tmp/o11 --json $OUT/timeline16.json 2>&1 | tail -8
# ( time timeout 120 $SPY record --threads --idle --rate 40 --format raw -o $OUT/spy_encode.txt -- python -m bslcodec.cli encode /tmp/m11 /tmp/o11 --bits 4 -q --overwrite ) 2>&1 | tail -5
# ( time timeout 120 $SPY record --threads --idle --native --rate 20 --format raw -o $OUT/spy_encode_native.txt -- python -m bslcodec.cli encode /tmp/m11 /tmp/o11 --bits 4 -q --overwrite ) 2>&1 | tail -5
# 3. GPU tests, 3 processes
T="-q -rs -p no:cacheprovider"
( timeout 300 python -m pytest $T tests/test_gpu.py tests/test_gpu_dq.py tests/test_fexp.py > $OUT/gpu_a.log 2>&1; echo "rc $?" >> $OUT/gpu_a.log ) &
( timeout 300 python -m pytest $T tests/test_gpu_ans.py tests/test_gpu_load.py tests/test_gpu_load_host.py > $OUT/gpu_b.log 2>&1; echo "rc $?" >> $OUT/gpu_b.log; timeout 100 python -m pytest $T tests/test_hostile_writers.py -k "gpu or cuda" >> $OUT/gpu_b.log 2>&1; echo "rc $?" >> $OUT/gpu_b.log ) &
( timeout 300 python -m pytest $T tests/test_tp.py tests/test_compressed.py tests/test_hf.py tests/test_torch_rate_dq.py > $OUT/gpu_c.log 2>&1; echo "rc $?" >> $OUT/gpu_c.log ) &
wait
tail -4 $OUT/gpu_*.log
# 4. CPU load scaling profile (16 threads)
timeout 100 python tools/bench/bench_load.py --cpu-only --only "default bits=4" --reps 3 --json $OUT/load_cpu.json --md $OUT/load_cpu.md 2>&1 | tail -12
ls $OUT
cat > /tmp/ld.py <<'PY'
import glob, time, bslcodec
fs = sorted(glob.glob('/tmp/o11/*.bsl'))
for r in range(4):
    t = time.perf_counter(); n = 0
    for f in fs:
        d = bslcodec.load_file(f); n += sum(v.nbytes for v in d.values()); del d
    dt = time.perf_counter() - t; print(f"load np {n/1e9:.2f} GB {dt:.2f} s {n/dt/1e9:.2f} GB/s", flush=True)
PY
timeout 100 python /tmp/ld.py 2>&1 | tail -6
ls $OUT
RATE_PROFILE=$OUT/rate_profile.txt timeout 100 python tools/bench/rate_overhead.py --device cuda --steps 15 --out $OUT 2>&1 | tail -15
