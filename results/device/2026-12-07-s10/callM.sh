# issue 19: CPU load stages only (the last device minutes of the session)
source devcarry/setup.sh
{ echo "commit $(cat devcarry/COMMIT)"; lscpu | grep -i "per core\|per socket\|Model name\|^CPU(s)"; uptime
  cat /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/defrag; } > $OUT/machine.txt 2>&1
cat $OUT/machine.txt
timeout 125 python tools/bench/load_stages.py --side 4096 --count 8 --threads 1 16 --reps 3 > $OUT/load_stages.txt 2>&1
echo "load_stages rc $?"; grep -v Warning $OUT/load_stages.txt | tail -6 | cut -c1-700
