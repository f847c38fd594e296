# fourteenth session, call N (issue 19 / 21): where a warm file -> CUDA load of the default file spends its time
# (prof_load.py: ratio, loader phases, pool / piece / numpy-twin variants, torch.profiler), then the rate term's
# step overhead on the H100 (rate_overhead.py), then the CPU load stages at 16 threads
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
TOTAL=${TOTAL:-420}
T0=$(date +%s); nvidia-smi -L; uptime; echo "commit $(cat devcarry/COMMIT)"; lscpu | grep -i "per core\|per socket\|Model name\|^CPU(s)"
timeout 200 python devcarry/prof_load.py > $OUT/prof_load.txt 2>&1
echo "prof_load rc $? at $(( $(date +%s) - T0 )) s"; grep -v Warn $OUT/prof_load.txt | head -60 | cut -c1-200
LEFT=$(( TOTAL - ($(date +%s) - T0) ))
[ $LEFT -gt 100 ] && timeout $(( LEFT > 150 ? 150 : LEFT )) python tools/bench/rate_overhead.py --out $OUT > $OUT/rate_overhead.txt 2>&1
echo "rate_overhead rc $? at $(( $(date +%s) - T0 )) s"; tail -c 2500 $OUT/rate_overhead.txt
LEFT=$(( TOTAL - ($(date +%s) - T0) ))
[ $LEFT -gt 80 ] && timeout $LEFT python tools/bench/load_stages.py --side 4096 --count 8 --threads 16 8 1 --reps 3 > $OUT/load_stages.txt 2>&1
echo "load_stages rc $? at $(( $(date +%s) - T0 )) s"; grep -v Warning $OUT/load_stages.txt | tail -5 | cut -c1-600
