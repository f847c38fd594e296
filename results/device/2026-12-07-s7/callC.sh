source devcarry/setup.sh >/dev/null 2>&1
echo "commit $(cat devcarry/COMMIT)"; lscpu | grep -i "per core\|per socket\|Model name\|^CPU(s)" ; lscpu | grep -o "avx512[a-z_0-9]*" | sort -u | tr '\n' ' '; echo; nproc; uptime
echo "== load stages"; timeout 100 python tools/bench/load_stages.py --side 4096 --count 8 --threads 1 16 2>&1 | tail -8
echo "== load cpu"; timeout 60 python tools/bench/bench_load.py --cpu-only --only "default bits=4" --reps 3 2>&1 | tail -5
