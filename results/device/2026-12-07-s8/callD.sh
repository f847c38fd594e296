# session 8 first call: #18 16-core encode (cold+warm timeline, bench_encode vs zstd, processes), #19 CPU load, #21 rate profile
source devcarry/setup.sh >/dev/null 2>&1
echo "commit $(cat devcarry/COMMIT)"; lscpu | grep -i "per core\|per socket\|Model name\|^CPU(s)\|NUMA" ; lscpu | grep -o "avx512[a-z_0-9]*" | sort -u | tr '\n' ' '; echo; nproc; uptime; date +%T; cat /sys/kernel/mm/transparent_hugepage/enabled
echo "== load stages"; timeout 80 python tools/bench/load_stages.py --side 4096 --count 8 --threads 1 16 2>&1 | tail -12
echo "== load cpu"; timeout 70 python tools/bench/bench_load.py --cpu-only --only "default bits=4" --reps 3 2>&1 | tail -5; date +%T
python -c "import sys; sys.path.insert(0,'tools/bench'); import bench_encode as b; print(b.generate('/tmp/m11', 22))"
echo "== timeline (cold kernels)"; timeout 100 python tools/experiments/encode_timeline.py /tmp/m11 --workers 16 --out /tmp/o11 2>&1 | tail -18
echo "== timeline (warm)"; timeout 60 python tools/experiments/encode_timeline.py /tmp/m11 --workers 16 --out /tmp/o11 2>&1 | tail -18; date +%T
echo "== bench_encode 1.1B 16 threads"; timeout 120 python tools/bench/bench_encode.py --layers 22 --threads 16 --settings "bits 4" --out $OUT/encode16.json 2>&1 | tail -8; date +%T
echo "== processes, 5 workers"; /usr/bin/time -f "wall %e s maxrss %M KB" timeout 80 python -c "
import time; t=time.perf_counter()
from bslcodec.files.parallel_encode import encode_checkpoint_parallel
encode_checkpoint_parallel('/tmp/m11','/tmp/o12',workers=5,bits=4)
print('parallel_encode', time.perf_counter()-t)" 2>&1 | tail -3
for f in /tmp/o11/*.bsl; do cmp -s $f /tmp/o12/$(basename $f) && echo "same $(basename $f)" || echo "DIFF $(basename $f)"; done; date +%T
echo "== overlap"; timeout 100 python tools/experiments/shard_overlap_ab.py /tmp/m11 16 2 2>&1 | tail -6; date +%T
echo "== rate profile"; RATE_PROFILE=/tmp/rate_profile.txt timeout 110 python tools/bench/rate_overhead.py --device cuda --steps 15 --out /tmp/ro 2>&1 | tail -12
head -40 /tmp/rate_profile.txt | cut -c1-200; date +%T
