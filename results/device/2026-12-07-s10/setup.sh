# device set-up: core wheels into /tmp/site, serving wheels into /tmp/site_serve, the project on the path
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site wheels/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site_serve wheels_serve/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site:$PYTHONPATH
export NUMBA_CACHE_DIR=/tmp/numba_cache
