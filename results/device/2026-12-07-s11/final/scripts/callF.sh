# eleventh session's last call: issue 19 loader A/B on 16 cores; issue 23: a fresh process's first .bsl load
source devcarry/setup.sh
T0=$(date +%s); echo "commit $(cat devcarry/COMMIT)"; nvidia-smi -L; uptime
timeout 100 python tools/bench/load_stages.py --side 4096 --count 8 --threads 16 1 --reps 5 > $OUT/load_stages.txt 2>&1
echo "load_stages rc $? at $(( $(date +%s) - T0 )) s"; grep "^threads\|^kernel CPU" $OUT/load_stages.txt | cut -c1-400
python - <<'PY'
import sys; sys.path.insert(0, "tools/bench"); import load_stages; load_stages.write("/tmp/ab.bsl", 4096, 8)
PY
timeout 60 python devcarry/ab_loader.py /tmp/ab.bsl 6 > $OUT/ab_loader.txt 2>&1; echo "ab rc $? at $(( $(date +%s) - T0 )) s"; cat $OUT/ab_loader.txt | tail -4
timeout 90 python devcarry/ab_cold.py > $OUT/ab_cold.txt 2>&1; echo "ab_cold rc $? at $(( $(date +%s) - T0 )) s"; grep -v Warn $OUT/ab_cold.txt | tail -9
timeout 60 python devcarry/first_load.py make > $OUT/fl_make.txt 2>&1; echo "make rc $?"; tail -2 $OUT/fl_make.txt
for i in 1 2; do for f in st bsl; do timeout 40 python devcarry/first_load.py $f >> $OUT/first_load.txt 2>&1; done; done
FL_PROF=1 timeout 40 python devcarry/first_load.py bsl > $OUT/first_load_prof.txt 2>&1
grep "^st \|^bsl " $OUT/first_load.txt $OUT/first_load_prof.txt; echo "done at $(( $(date +%s) - T0 )) s"
