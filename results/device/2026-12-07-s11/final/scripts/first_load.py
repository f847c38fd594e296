"""Where a fresh replica's first .bsl load goes (issue 23): a 2-layer TinyLlama-shaped folder (config from
devcarry/tinycfg), safetensors and bits=4 .bsl; then fresh processes each timing imports and the first and
second load (cProfile of the first .bsl load, top entries by cumulative time)."""
import json, os, subprocess, sys, time
if sys.argv[1:2] == ["make"]:
    import torch, transformers, bslcodec
    from bslcodec.files.checkpoint import encode_checkpoint
    cfg = json.load(open("devcarry/tinycfg/config.json")); cfg["num_hidden_layers"] = 2
    c = transformers.LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    torch.manual_seed(0)
    m = transformers.LlamaForCausalLM(c).to(torch.bfloat16)
    m.save_pretrained("/tmp/fl/st"); m.config.save_pretrained("/tmp/fl/st")
    encode_checkpoint("/tmp/fl/st", "/tmp/fl/bsl", bits=4)
    sys.exit(0)
fmt = sys.argv[1]
T = {}
t0 = time.perf_counter(); import torch; T["import torch"] = time.perf_counter() - t0
t0 = time.perf_counter(); import transformers; T["import transformers"] = time.perf_counter() - t0
t0 = time.perf_counter(); torch.zeros(1, device="cuda"); torch.cuda.synchronize(); T["cuda init"] = time.perf_counter() - t0
if fmt == "bsl":
    t0 = time.perf_counter(); import bslcodec.gpu; T["import bslcodec.gpu"] = time.perf_counter() - t0
    import cProfile, pstats, io
    from bslcodec.hf import from_pretrained
    pr = cProfile.Profile()
    t0 = time.perf_counter(); pr.enable()
    m = from_pretrained("/tmp/fl/bsl", device="cuda", dtype=torch.bfloat16); torch.cuda.synchronize()
    pr.disable(); T["first load (profiled)"] = time.perf_counter() - t0
    t0 = time.perf_counter(); m = from_pretrained("/tmp/fl/bsl", device="cuda", dtype=torch.bfloat16); torch.cuda.synchronize()
    T["second load"] = time.perf_counter() - t0
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(40); prof = s.getvalue()
else:
    from transformers import AutoModelForCausalLM
    t0 = time.perf_counter(); m = AutoModelForCausalLM.from_pretrained("/tmp/fl/st", device_map="cuda", dtype=torch.bfloat16); torch.cuda.synchronize()
    T["first load"] = time.perf_counter() - t0
    t0 = time.perf_counter(); m = AutoModelForCausalLM.from_pretrained("/tmp/fl/st", device_map="cuda", dtype=torch.bfloat16); torch.cuda.synchronize()
    T["second load"] = time.perf_counter() - t0
    prof = ""
print(fmt, " | ".join(f"{k} {v:.3f} s" for k, v in T.items()), flush=True)
if prof and os.environ.get("FL_PROF"):
    print("\n".join(l[:150] for l in prof.splitlines()[:70]))
