# thirteenth session, call S: replica cold start at 2 GB/s, 1.1B LLaMA-shaped causal LM at bits=4, as many ABBA
# pairs as the deadline allows (a GPU load now imports no numba: codecs/*_header, codecs/params)
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
T0=$(date +%s); nvidia-smi -L; uptime
LEFT=$(( 580 - ($(date +%s) - T0) ))
PYTHONPATH=/tmp/site_serve:$PYTHONPATH timeout -s TERM $LEFT python tools/bench/bench_serve.py --accelerator cuda --model synthetic --config-dir devcarry/tinycfg --rates 2 --repeats 8 --bits 4 --deadline $(( LEFT - 15 )) --work /tmp/serve_big --out $OUT/serve_cuda_1b.md > $OUT/serve.log 2>&1
echo "serve rc $? at $(( $(date +%s) - T0 )) s"; uptime; grep -v "Loading weights" $OUT/serve.log | tail -c 5000
