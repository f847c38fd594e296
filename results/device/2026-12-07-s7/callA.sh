# combined: encode 16 cores (#18), CPU load (#19), rate-term profile (#21); most wanted first
source devcarry/setup.sh >/dev/null 2>&1
echo "commit $(cat devcarry/COMMIT)"; lscpu | grep -i "per core\|per socket\|Model name\|^CPU(s)\|NUMA" ; lscpu | grep -o "avx512[a-z_]*" | sort -u | tr '\n' ' '; echo; cat /sys/fs/cgroup/cpu.max 2>/dev/null; nproc; uptime
echo "== load stages"; timeout 90 python tools/bench/load_stages.py --side 4096 --count 8 --threads 1 2 4 8 16 2>&1 | tail -12
echo "== load cpu"; timeout 90 python tools/bench/bench_load.py --cpu-only --only "default bits=4" --reps 3 2>&1 | tail -5
python -c "import sys; sys.path.insert(0,'tools/bench'); import bench_encode as b; print(b.generate('/tmp/m11', 22))"
echo "== timeline (cold kernels)"; timeout 90 python tools/experiments/encode_timeline.py /tmp/m11 --workers 16 --out /tmp/o11 2>&1 | tail -18
echo "== timeline (warm)"; timeout 60 python tools/experiments/encode_timeline.py /tmp/m11 --workers 16 --out /tmp/o11 2>&1 | tail -18
echo "== timeline MALLOC_MMAP_THRESHOLD_"; MALLOC_MMAP_THRESHOLD_=33554432 timeout 60 python tools/experiments/encode_timeline.py /tmp/m11 --workers 16 --out /tmp/o11 2>&1 | head -2
echo "== rate profile"; RATE_PROFILE=/tmp/rate_profile.txt timeout 120 python tools/bench/rate_overhead.py --device cuda --steps 15 --out /tmp/ro 2>&1 | tail -12
head -45 /tmp/rate_profile.txt | cut -c1-200
echo "== bench_encode 1.1B 16 threads"; timeout 150 python tools/bench/bench_encode.py --layers 22 --threads 16 --settings "bits 4" --out $OUT/encode16.json 2>&1 | tail -8
python -m pip install -q --no-index --no-deps --target /tmp/spy devcarry/py_spy*.whl; SPY=/tmp/spy/bin/py-spy
timeout 60 $SPY record --gil --idle --threads --rate 50 --format raw -o $OUT/spy_gil.txt -- python -m bslcodec.cli encode /tmp/m11 /tmp/o11 --bits 4 -q --overwrite >/dev/null 2>&1; echo "spy rc $?"
echo "== bench_encode 3 layers scaling"; timeout 150 python tools/bench/bench_encode.py --layers 3 --threads 1 2 4 8 16 --settings "bits 4" --out $OUT/encode_scale.json 2>&1 | tail -10
