# session 8, last: #21 rate term A/B (tl.histogram + transposed scan vs one-hot histogram), value/grad vs old engine in the table
source devcarry/setup.sh >/dev/null 2>&1
echo "commit $(cat devcarry/COMMIT)"; date +%T
echo "== rate overhead, tl.histogram"; timeout 70 python tools/bench/rate_overhead.py --device cuda --steps 20 --out $OUT/ro_tl 2>&1 | grep -A5 "^| engine"; date +%T
echo "== rate overhead, one-hot histogram"; timeout 70 python -c "
import runpy, sys
import bslcodec.torch.rate_dq_triton as t
t.HIST_TL = False
sys.argv = ['rate_overhead.py', '--device', 'cuda', '--steps', '20', '--out', '$OUT/ro_onehot']
runpy.run_path('tools/bench/rate_overhead.py', run_name='__main__')" 2>&1 | grep -A5 "^| engine"; date +%T
