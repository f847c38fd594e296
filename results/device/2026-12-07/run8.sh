source devcarry/setup.sh >/dev/null 2>&1
python -c "import sys; sys.path.insert(0,'tools/bench'); import bench_encode as b; print(b.generate('/tmp/m11', 22))" >/dev/null
for B in 128 512 2048; do
python - $B <<'PY'
import sys, time, resource, numba
from bslcodec.files import pool
pool.MEMORY_BUDGET = int(sys.argv[1]) << 20
from click.testing import CliRunner
from bslcodec.cli import main
t = time.perf_counter()
r = CliRunner().invoke(main, ["encode", "/tmp/m11", "/tmp/o11", "-q", "--overwrite", "--workers", "16", "--bits", "4"])
print(f"budget {sys.argv[1]} MiB: exit {r.exit_code} {time.perf_counter()-t:.2f} s, maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MB, layer {numba.threading_layer()}", flush=True)
PY
done
