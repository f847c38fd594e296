source devcarry/setup.sh >/dev/null 2>&1
echo "commit $(cat devcarry/COMMIT)"; uptime
timeout 130 python tools/bench/bench_encode.py --layers 22 --threads 16 --settings "bits 4" --out $OUT/encode_16b.json 2>&1 | tail -7
python -c "import sys; sys.path.insert(0,'tools/bench'); import bench_encode as b; print(b.generate('/tmp/m11', 22))" >/dev/null
timeout 40 python tools/experiments/encode_timeline.py /tmp/m11 --workers 16 --out /tmp/o11 2>&1 | tail -6
