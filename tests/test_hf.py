"""Loading ``.bsl`` weights into inference code: ``bslcodec.torch.load_state_dict`` and
``bslcodec.hf.from_pretrained`` (tiny models made here, plus the real all-MiniLM-L6-v2 when installed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="these tests need torch")

import bslcodec  # noqa: E402
from bslcodec.files.checkpoint import decode_checkpoint, encode_checkpoint  # noqa: E402
from bslcodec.torch import load_state_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.LayerNorm(128),
                               torch.nn.Linear(128, 32))


# ---------------------------------------------------------------- bslcodec.torch.load_state_dict

def test_load_state_dict_file(tmp_path):
    src = _net(0)
    bslcodec.save_file(src.state_dict(), tmp_path / "net.bsl", max_error=1e-4)
    dst = _net(1)
    res = load_state_dict(dst, tmp_path / "net.bsl")
    assert res.missing_keys == [] and res.unexpected_keys == []
    for k, v in src.state_dict().items():
        assert (dst.state_dict()[k] - v).abs().max() <= 1e-4, k
    x = torch.randn(8, 64)
    assert torch.allclose(src(x), dst(x), atol=1e-2)


def test_load_state_dict_strict(tmp_path):
    src = _net(0)
    sd = src.state_dict()
    sd.pop("3.bias")
    sd["extra"] = torch.ones(2)
    bslcodec.save_file(sd, tmp_path / "net.bsl")
    dst = _net(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*"3.bias"'):
        load_state_dict(dst, tmp_path / "net.bsl")
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing loaded
    res = load_state_dict(dst, tmp_path / "net.bsl", strict=False, device=None)
    assert res.missing_keys == ["3.bias"] and res.unexpected_keys == ["extra"]
    assert torch.equal(dst.state_dict()["3.bias"], before["3.bias"])
    assert not torch.equal(dst.state_dict()["0.weight"], before["0.weight"])


def test_load_state_dict_sharded_folder(tmp_path):
    from safetensors.torch import save_file

    src = _net(2)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    folder = tmp_path / "hf"
    folder.mkdir()
    names = sorted(sd)
    shards = {"a.safetensors": names[:3], "b.safetensors": names[3:]}
    for shard, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(folder / shard))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: s for s, ks in shards.items() for k in ks}}))
    encode_checkpoint(folder, tmp_path / "enc", lossless=["*"], progress=False)
    dst = _net(3)
    load_state_dict(dst, tmp_path / "enc")
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in sd.items())


def test_load_state_dict_bf16_model(tmp_path):
    src = _net(4).to(torch.bfloat16)
    bslcodec.save_file(src.state_dict(), tmp_path / "net.bsl")
    dst = _net(5).to(torch.bfloat16)
    load_state_dict(dst, tmp_path / "net.bsl")
    assert dst[0].weight.dtype == torch.bfloat16
    assert (dst[0].weight.float() - src[0].weight.float()).abs().max() < 0.01


# ---------------------------------------------------------------- bslcodec.hf.from_pretrained

transformers = pytest.importorskip("transformers", reason="bslcodec.hf tests need transformers")
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()
import bslcodec.hf  # noqa: E402


def _tiny_bert(folder: Path, **save_kwargs):
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).eval()
    model.save_pretrained(str(folder), **save_kwargs)
    return model


def _out(model):
    ids = torch.arange(2, 26).reshape(2, 12) % 120
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


def test_from_pretrained_tiny(tmp_path):
    ref = _tiny_bert(tmp_path / "hf")
    encode_checkpoint(tmp_path / "hf", tmp_path / "enc", progress=False)
    assert (tmp_path / "enc" / "model.bsl").is_file() and (tmp_path / "enc" / "config.json").is_file()
    model = bslcodec.hf.from_pretrained(tmp_path / "enc", strict=True)
    assert type(model) is transformers.BertModel and not model.training
    diff = (_out(model) - _out(ref)).abs().max()
    assert 0 < diff < 0.05
    # exact with every tensor stored losslessly; an Auto class and a dtype go through
    encode_checkpoint(tmp_path / "hf", tmp_path / "exact", lossless=["*"], progress=False)
    model = bslcodec.hf.from_pretrained(tmp_path / "exact", model_class=transformers.AutoModel)
    assert torch.equal(_out(model), _out(ref))
    model = bslcodec.hf.from_pretrained(tmp_path / "exact", model_class="BertModel", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    model, info = bslcodec.hf.from_pretrained(tmp_path / "exact", output_loading_info=True)
    assert info["missing_keys"] == [] or not info["missing_keys"]


def test_from_pretrained_sharded_and_decoded_folder(tmp_path):
    ref = _tiny_bert(tmp_path / "hf", max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    encode_checkpoint(tmp_path / "hf", tmp_path / "enc", lossless=["*"], progress=False)
    index = json.loads((tmp_path / "enc" / "model.bsl.index.json").read_text())
    n = len(set(index["weight_map"].values()))
    assert n >= 2 and f"model-00001-of-{n:05d}.bsl" in index["weight_map"].values()
    model = bslcodec.hf.from_pretrained(tmp_path / "enc", strict=True)
    assert torch.equal(_out(model), _out(ref))
    # the decoded folder loads in transformers itself, as the original did
    decode_checkpoint(tmp_path / "enc", tmp_path / "dec", progress=False)
    again = transformers.AutoModel.from_pretrained(str(tmp_path / "dec"))
    assert torch.equal(_out(again), _out(ref))


def test_from_pretrained_errors(tmp_path):
    _tiny_bert(tmp_path / "hf")
    with pytest.raises(bslcodec.BslError, match="no .bsl weights"):
        bslcodec.hf.from_pretrained(tmp_path / "hf")
    with pytest.raises(bslcodec.BslError, match="not a folder"):
        bslcodec.hf.from_pretrained(tmp_path / "nope")
    encode_checkpoint(tmp_path / "hf", tmp_path / "enc", progress=False)
    with pytest.raises(bslcodec.BslError, match="no class named"):
        bslcodec.hf.from_pretrained(tmp_path / "enc", model_class="NoSuchModel")
    # a model that wants more weights than the file has: strict reports it
    with pytest.raises(bslcodec.BslError, match="missing keys"):
        bslcodec.hf.from_pretrained(tmp_path / "enc", model_class="BertForMaskedLM", strict=True)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_from_pretrained_cuda(tmp_path):
    ref = _tiny_bert(tmp_path / "hf")
    encode_checkpoint(tmp_path / "hf", tmp_path / "enc", progress=False)
    cpu = bslcodec.hf.from_pretrained(tmp_path / "enc")
    gpu = bslcodec.hf.from_pretrained(tmp_path / "enc", device="cuda")
    assert next(gpu.parameters()).device.type == "cuda"
    for k, v in cpu.state_dict().items():
        assert torch.equal(gpu.state_dict()[k].cpu(), v), k
    dst = _net(1).cuda()
    bslcodec.save_file(_net(0).state_dict(), tmp_path / "net.bsl")
    load_state_dict(dst, tmp_path / "net.bsl", device="cuda")
    assert dst[0].weight.device.type == "cuda"
    del ref


# ---------------------------------------------------------------- the real model (slow: ~20 s)

def _minilm():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import minilm
    finally:
        sys.path.pop(0)
    try:
        minilm.model_dir()
    except minilm.ModelNotInstalledError as exc:
        pytest.skip(f"real-model test: {exc}")
    return minilm


def test_real_minilm_from_pretrained(tmp_path):
    minilm = _minilm()
    from click.testing import CliRunner

    from bslcodec.cli import main

    res = CliRunner().invoke(main, ["encode", str(minilm.model_dir()), str(tmp_path / "enc"), "-q"])
    assert res.exit_code == 0, res.output
    model = bslcodec.hf.from_pretrained(tmp_path / "enc", strict=True)  # the one changed line
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "enc"))
    ref_tok = transformers.AutoTokenizer.from_pretrained(str(minilm.model_dir()))
    assert tok(list(minilm.SENTENCES[:3]))["input_ids"] == ref_tok(list(minilm.SENTENCES[:3]))["input_ids"]
    mean_cos, min_cos = minilm.cosine_vs_original(model.state_dict())
    assert mean_cos >= 0.999 and min_cos >= 0.998, (mean_cos, min_cos)
    size = (tmp_path / "enc" / "model.bsl").stat().st_size
    assert 8 * size / 22_713_216 < 9.0  # default setting: about 8.5 bits/weight
