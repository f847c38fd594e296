"""Tensor-parallel loading of a ``.bsl`` model over NCCL (issue 10): each rank decodes on its own GPU only its
slice of every tensor (``bslcodec.torch.tp.shard_state_dict`` with ``LLAMA_PLAN``), then the assembled
tensors are checked against the single-GPU decode.

    python tools/bench/tp_nccl.py prep --work /tmp/tpw [--codec eg]      # 1.1B LLaMA-style bf16 checkpoint -> .bsl
    torchrun --nproc-per-node=N tools/bench/tp_nccl.py run --bsl /tmp/tpw/bsl --out DIR [--column auto|local]

``run`` writes ``DIR/tp_ws{N}_rank{r}.json`` per rank: load seconds (barrier to barrier, after a warm-up
that compiles the kernels), payload bytes of the tensors the rank loaded, payload bytes its decoders
touched, bytes exchanged, and the checks: every rank's shard equals ``tensor_split(full, N, dim)[rank]``
of a whole-file decode on the same GPU (all ranks' verdicts all-reduced), and an ``all_gather`` of the
row-split (dim 0) tensors whose rows divide evenly, concatenated and compared with the full tensor.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]


def prep(a):
    import bench_inference as bi

    args = argparse.Namespace(hidden=2048, inter=5632, layers=22, heads=32, kv_heads=4, vocab=32000, nu=1.0,
                              rel_step=1 / 8, codec=a.codec, quantizer=None, workers=a.workers)
    bi.RESULTS.setdefault("llama", {})
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    st = bi.make_checkpoint(args, bi.llama_config(args), work)
    t1 = time.perf_counter()
    out = bi.encode(args, st, work)
    info = {"checkpoint_s": round(t1 - t, 1), **bi.RESULTS["llama"]}
    (work / "prep.json").write_text(json.dumps(info, indent=1, default=str))
    print(json.dumps(info, default=str), flush=True)
    print(out)


def run(a):
    import torch
    import torch.distributed as dist

    import bslcodec
    from bslcodec.files.readers import bsl_files
    from bslcodec.torch.tp import LLAMA_PLAN, plan_dim, shard_state_dict

    dist.init_process_group(a.backend)
    rank, ws = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    if a.backend == "nccl":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        sync = torch.cuda.synchronize
    else:  # gloo on the CPU: a dry run of the script
        dev = torch.device("cpu")

        def sync():
            pass
    bsl = Path(a.bsl)
    res = {"rank": rank, "world_size": ws, "column": a.column, "backend": a.backend,
           "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    # warm-up: compile and load the kernels, touch the files
    first = None
    for f in bsl_files(bsl):
        with bslcodec.safe_open(f) as h:
            first = next(iter(h.keys()))
        break
    shard_state_dict(bsl, LLAMA_PLAN, device=dev, names=[first], column=a.column)
    sync()
    dist.barrier()
    st = {}
    t = time.perf_counter()
    sd = shard_state_dict(bsl, LLAMA_PLAN, device=dev, stats=st, column=a.column)
    sync()
    t_local = time.perf_counter() - t
    dist.barrier()
    res["load_seconds_rank"] = round(t_local, 3)
    res["load_seconds_barrier"] = round(time.perf_counter() - t, 3)
    res["stats"] = st
    res["read_fraction"] = round(st["bytes_read"] / st["payload_bytes"], 4) if st.get("payload_bytes") else None
    res["shard_bytes_on_gpu"] = int(sum(v.numel() * v.element_size() for v in sd.values()))
    # checks against the whole-file decode on this GPU
    same = True
    gathered = ok_gather = 0
    for f in bsl_files(bsl):
        full = bslcodec.load_file(f, framework="pt", device=str(dev))
        for k, v in full.items():
            if k not in sd:
                continue
            dim = plan_dim(LLAMA_PLAN, k)
            want = v if dim is None or v.dim() == 0 else torch.tensor_split(v, ws, dim % v.dim())[rank]
            same &= bool(torch.equal(want.contiguous(), sd[k]))
            if ws > 1 and dim is not None and dim % max(v.dim(), 1) == 0 and v.dim() >= 1 and v.shape[0] % ws == 0 \
                    and gathered < a.gather_tensors:
                parts = [torch.empty_like(sd[k]) for _ in range(ws)]
                dist.all_gather(parts, sd[k].contiguous())
                ok_gather += int(torch.equal(torch.cat(parts, 0), v))
                gathered += 1
        del full
    flag = torch.tensor([1 if same else 0], device=dev)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    res["every_rank_shard_equals_full_decode_slice"] = bool(flag.item())
    res["all_gather_checked"] = gathered
    res["all_gather_equal"] = ok_gather
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"tp_ws{ws}_rank{rank}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "stats"}), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prep")
    p.add_argument("--work", required=True)
    p.add_argument("--codec", default="eg", choices=("eg", "ans", "auto"))
    p.add_argument("--workers", type=int, default=16)
    r = sub.add_parser("run")
    r.add_argument("--bsl", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--column", default="auto", choices=("auto", "exchange", "local"))
    r.add_argument("--gather-tensors", type=int, default=40)
    r.add_argument("--backend", default="nccl", choices=("nccl", "gloo"))
    a = ap.parse_args(argv)
    prep(a) if a.cmd == "prep" else run(a)


if __name__ == "__main__":
    sys.exit(main())
