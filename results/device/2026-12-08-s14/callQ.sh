# for the next session (not run yet): the GPU tests the fourteenth session did not run (compressed, hf, fexp's CUDA
# cases); prof_load2.py (slots, chunking, checksum variants, host-side cProfile); ck_ab.py (the GIL-free
# checksums on 16 threads, CPU load_file); then replica cold-start pairs at 2 GB/s, bits=4,
# with the rest of TOTAL (issue 23 needs >= 4 pairs). Copy prof_load2.py, ck_ab.py and this script into devcarry/ first.
source devcarry/setup.sh
export BSLCODEC_CACHE_DIR=/tmp/bslcache
TOTAL=${TOTAL:-585}
T0=$(date +%s); nvidia-smi -L; uptime; echo "commit $(cat devcarry/COMMIT)"
timeout 150 python -m pytest -q -p no:cacheprovider -n 16 --durations=8 tests/test_compressed.py tests/test_hf.py tests/test_fexp.py > $OUT/t_gpu3.txt 2>&1
echo "t_gpu3 rc $? at $(( $(date +%s) - T0 )) s"; grep -i "passed\|failed\|error" $OUT/t_gpu3.txt | tail -8
timeout 150 python devcarry/prof_load2.py > $OUT/prof_load2.txt 2>&1
echo "prof_load2 rc $? at $(( $(date +%s) - T0 )) s"; grep -v Warn $OUT/prof_load2.txt | head -40 | cut -c1-180
timeout 60 python devcarry/ck_ab.py /tmp/prof/b4.bsl 16 > $OUT/ck_ab.txt 2>&1; echo "ck_ab rc $? at $(( $(date +%s) - T0 )) s"; grep -v Warn $OUT/ck_ab.txt
LEFT=$(( TOTAL - ($(date +%s) - T0) )); echo "serve deadline $LEFT s at $(( $(date +%s) - T0 )) s"
[ $LEFT -gt 120 ] && PYTHONPATH=/tmp/site_serve:$PYTHONPATH timeout -s TERM $LEFT python tools/bench/bench_serve.py --accelerator cuda --model synthetic --config-dir devcarry/tinycfg --rates 2 --repeats 8 --bits 4 --deadline $(( LEFT - 15 )) --work /tmp/serve_big --out $OUT/serve_cuda_1b.md > $OUT/serve.log 2>&1
echo "serve rc $? at $(( $(date +%s) - T0 )) s"; uptime; grep -v "Loading weights" $OUT/serve.log | tail -c 4000
