# issue 19: CPU load stages (16 threads: faults vs kernel) and file -> CUDA for the default and lossless, page cache + 2 GB/s
source devcarry/setup.sh
T0=$(date +%s)
{ echo "commit $(cat devcarry/COMMIT)"; nvidia-smi -L; lscpu | grep -i "per core\|per socket\|Model name\|^CPU(s)"; uptime
  cat /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/defrag; } > $OUT/machine.txt 2>&1
cat $OUT/machine.txt
timeout 130 python tools/bench/load_stages.py --side 4096 --count 8 --threads 1 4 8 16 --reps 3 > $OUT/load_stages.txt 2>&1
echo "load_stages rc $? at $(( $(date +%s) - T0 )) s"; grep -v Warning $OUT/load_stages.txt | tail -7 | cut -c1-600
LEFT=$(( 240 - ($(date +%s) - T0) ))
timeout $LEFT python tools/bench/bench_load.py --only "default bits=4" "lossless" --reps 5 --commit $(cat devcarry/COMMIT) --md $OUT/load_gpu.md --json $OUT/load_gpu.json > $OUT/load_gpu.log 2>&1
echo "bench_load rc $? at $(( $(date +%s) - T0 )) s"; tail -c 3500 $OUT/load_gpu.log
