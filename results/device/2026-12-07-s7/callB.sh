# short: CPU load with the vector rANS step (#19), then the encode timeline (#18)
source devcarry/setup.sh >/dev/null 2>&1
echo "commit $(cat devcarry/COMMIT)"; lscpu | grep -i "per core\|per socket\|Model name\|^CPU(s)\|NUMA" ; lscpu | grep -o "avx512[a-z_0-9]*" | sort -u | tr '\n' ' '; echo; cat /sys/fs/cgroup/cpu.max 2>/dev/null; nproc; uptime
echo "== load stages"; timeout 80 python tools/bench/load_stages.py --side 4096 --count 8 --threads 1 2 4 8 16 2>&1 | tail -12
echo "== load cpu"; timeout 70 python tools/bench/bench_load.py --cpu-only --only "default bits=4" --reps 3 2>&1 | tail -5
python -c "import sys; sys.path.insert(0,'tools/bench'); import bench_encode as b; print(b.generate('/tmp/m11', 22))"
echo "== timeline (cold kernels)"; timeout 90 python tools/experiments/encode_timeline.py /tmp/m11 --workers 16 --out /tmp/o11 2>&1 | tail -18
echo "== timeline (warm)"; timeout 60 python tools/experiments/encode_timeline.py /tmp/m11 --workers 16 --out /tmp/o11 2>&1 | tail -18
