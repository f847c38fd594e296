# issue 21: the GPU experiment, longer training, smaller lambdas
source devcarry/setup.sh
echo "commit $(cat devcarry/COMMIT)"; nvidia-smi -L; nproc; uptime; date +%T
python -c "import torch, triton, numba; print(torch.__version__, triton.__version__, numba.__version__)"
timeout -s TERM 415 python tools/bench/train_gpu.py --out $OUT --lams 0.01,0.05 --train-seconds 240 --budget-s 400 --verbose > $OUT/train.log 2>&1
echo "rc $?"; date +%T; tail -c 9000 $OUT/train.log
