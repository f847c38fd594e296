#!/usr/bin/env bash
# Install the peer codecs (NNCodec 2.1.3, ZipNN 0.5.4) for tools/bench/ WITHOUT touching the venv.
#
# nncodec pins numpy<2 and pulls a CUDA torchvision; installing it into the project venv would
# downgrade numpy and break numba/torch there. So both packages (and the few pure-Python or
# self-contained modules nncodec imports at load time) go into a separate --target folder with
# --no-deps, built against the venv's numpy 2. run_all.py puts that folder on sys.path and stubs
# out torchvision (only nncodec's dataset/use-case modules import it; the codec never calls it),
# so every codec runs in ONE process and the timings are comparable.
#
#   . .venv/bin/activate && bash tools/bench/setup_peers.sh      # ~5 min (builds deepCABAC C++)
set -euo pipefail
SITE="${BSL_PEERS_SITE:-$HOME/.cache/bslcodec-bench/site}"
mkdir -p "$SITE"
python -m pip install --no-deps --target "$SITE" \
    nncodec==2.1.3 zipnn==0.5.4 \
    pandas==3.0.6 opencv-python==4.11.0.86 h5py==3.16.0 torchmetrics==1.9.0 \
    lightning-utilities==0.15.3 ptflops==0.7.5
echo "peers installed in $SITE"
