# issue 23: replica cold start, 1.1B TinyLlama-shaped at --bits 4; issue 19: CPU load stages at 1..16 threads
source devcarry/setup.sh
T0=$(date +%s)
{ echo "commit $(cat devcarry/COMMIT)"; nvidia-smi -L; lscpu | grep -i "per core\|per socket\|Model name\|^CPU(s)\|NUMA"; uptime
  cat /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/defrag; } > $OUT/machine.txt 2>&1
cat $OUT/machine.txt
timeout 110 python tools/bench/load_stages.py --side 4096 --count 8 --threads 1 2 4 8 16 --reps 3 > $OUT/load_stages.txt 2>&1
echo "load_stages rc $? at $(( $(date +%s) - T0 )) s"; grep -v Warning $OUT/load_stages.txt | tail -8
PYTHONPATH=/tmp/site_serve:$PYTHONPATH timeout 40 python -X importtime -c "import torch, transformers, litserve; import bslcodec.serve.litserve" 2> /tmp/imp.txt
echo "importtime rc $?"; sort -t'|' -k2 -n -r /tmp/imp.txt | head -25 > $OUT/importtime.txt; cat $OUT/importtime.txt | cut -c1-150 | head -12
LEFT=$(( 585 - ($(date +%s) - T0) ))
echo "serve deadline $LEFT s"
PYTHONPATH=/tmp/site_serve:$PYTHONPATH timeout -s TERM $LEFT python tools/bench/bench_serve.py --accelerator cuda --model synthetic --config-dir devcarry/tinycfg --rates 2,1 --repeats 4 --bits 4 --deadline $(( LEFT - 15 )) --work /tmp/serve_big --out $OUT/serve_cuda_1b.md > $OUT/serve.log 2>&1
echo "serve rc $? at $(( $(date +%s) - T0 )) s"; grep -v "Loading weights" $OUT/serve.log | tail -c 5000
