"""The encoder's knobs (bslcodec/pipeline/knobs.py, docs/using.md): a target (bits=, rel_error=, max_error=),
exact=, expert=; the old keywords give identical bytes with one DeprecationWarning; conflicts raise
EncodeError; the CLI's new flags and the old hidden ones write the same files."""

import warnings

import numpy as np
import pytest

import bslcodec
from bslcodec import EncodeError


def _tensors(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"a.weight": rng.laplace(0, 0.02, (96, 160)).astype(np.float32),
            "b.weight": rng.normal(0, 0.5, (64, 200)).astype(np.float32),
            "a.bias": rng.normal(0, 0.01, 96).astype(np.float32),
            "steps": np.arange(5, dtype=np.int64)}


def _calls(fn, kw):
    """(result, [DeprecationWarning messages]) of ``fn(**kw)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(**kw)
    return out, [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]


# (old keywords, the same in the new spelling)
PAIRS = [
    ({"lossless": ["a.*"]}, {"exact": ["a.*"]}),
    ({"lossless": True}, {"exact": True}),
    ({"lossless": "a.bias", "bits": 6.0}, {"exact": "a.bias", "bits": 6.0}),
    ({"rel_step": 1 / 16}, {"expert": {"rel_step": 1 / 16}}),
    ({"rel_step": 1 / 16, "quantizer": "uniform"}, {"expert": {"rel_step": 1 / 16, "quantizer": "uniform"}}),
    ({"bits": 4.0, "codec": "eg"}, {"bits": 4.0, "expert": {"codec": "eg"}}),
    ({"rel_step": 0.3, "rdoq": 0.12}, {"expert": {"rel_step": 0.3, "rdoq": 0.12}}),
    ({"max_error": 1e-3, "quantizer": "dq"}, {"max_error": 1e-3, "expert": {"quantizer": "dq"}}),
    ({"rel_step": 1 / 8, "codec": "ans", "quantizer": "dq", "lossless": ["steps"]},
     {"exact": ["steps"], "expert": {"rel_step": 1 / 8, "codec": "ans", "quantizer": "dq"}}),
]


@pytest.mark.parametrize("old, new", PAIRS)
def test_old_and_new_spelling_write_identical_bytes(old, new):
    t = _tensors()
    a, warned = _calls(lambda **kw: bslcodec.save(t, **kw), old)
    b, quiet = _calls(lambda **kw: bslcodec.save(t, **kw), new)
    assert a == b
    assert len(warned) == 1 and not quiet
    for k in old:
        if k in ("rel_step", "quantizer", "codec", "rdoq"):
            assert f"'{k}'" in warned[0] and "expert=" in warned[0]
        elif k == "lossless":
            assert "exact=" in warned[0]


def test_save_file_encode_and_encode_tensors_take_both(tmp_path):
    t = _tensors(1)
    x = t["a.weight"]
    for old, new in (({"lossless": True}, {"exact": True}), ({"rel_step": 1 / 16}, {"expert": {"rel_step": 1 / 16}})):
        a, w = _calls(lambda **kw: bslcodec.encode(x, **kw), old)
        assert a == _calls(lambda **kw: bslcodec.encode(x, **kw), new)[0] and len(w) == 1
        _calls(lambda **kw: bslcodec.save_file(t, tmp_path / "old.bsl", **kw), old)
        _calls(lambda **kw: bslcodec.save_file(t, tmp_path / "new.bsl", **kw), new)
        assert (tmp_path / "old.bsl").read_bytes() == (tmp_path / "new.bsl").read_bytes()
    from bslcodec.files.api import encode_tensors

    (e1, p1, m1), w = _calls(lambda **kw: encode_tensors(t, **kw), {"rel_step": 0.1, "codec": "eg"})
    (e2, p2, m2), _ = _calls(lambda **kw: encode_tensors(t, **kw), {"expert": {"rel_step": 0.1, "codec": "eg"}})
    assert [bytes(p) for p in p1] == [bytes(p) for p in p2] and m1 == m2 and len(w) == 1
    # encode(lossless=False), the old default said out loud: the same bytes as nothing
    assert _calls(lambda **kw: bslcodec.encode(x, **kw), {"lossless": False})[0] == bslcodec.encode(x)


def test_the_warning_points_at_the_callers_line():
    with pytest.warns(DeprecationWarning) as rec:
        bslcodec.save({"w": np.ones(4, np.float32)}, lossless=True)
    assert rec[0].filename == __file__


def test_default_is_rel_error_2_to_minus_8():
    t = _tensors(2)
    assert bslcodec.save(t) == bslcodec.save(t, rel_error=2.0 ** -8)


@pytest.mark.parametrize("target", [2.0 ** -6, 2.0 ** -4])
def test_rel_error_meets_its_target(target):
    rng = np.random.default_rng(3)
    t = {f"w{i}": rng.laplace(0, s, (256, 256)).astype(np.float32) for i, s in enumerate((0.01, 0.03, 0.1))}
    back = bslcodec.load(bslcodec.save(t, rel_error=target))
    # the root mean square over tensors of each tensor's relative L2 error
    rel2 = [float(np.sum((back[n].astype(np.float64) - t[n]) ** 2)) / float(np.sum(t[n].astype(np.float64) ** 2))
            for n in t]
    rms = float(np.mean(rel2)) ** 0.5
    assert 0.8 * target <= rms <= 1.2 * target  # the allocation's prediction (test_allocation: within 10 %)
    assert len(bslcodec.save(t, rel_error=target)) < len(bslcodec.save(t, rel_error=target / 4))


BAD = [
    ({"bits": 4, "rel_error": 0.01}, "at most one"),
    ({"rel_error": 0.01, "max_error": 1e-3}, "at most one"),
    ({"bits": 4, "expert": {"rel_step": 0.1}}, "at most one"),
    ({"max_error": 1e-3, "rel_step": 0.1}, "at most one"),
    ({"rel_step": 0.1, "expert": {"rel_step": 0.1}}, "not both"),
    ({"lossless": True, "exact": True}, "not both"),
    ({"codec": "eg", "expert": {"codec": "ans"}}, "not both"),
    ({"expert": {"codex": "eg"}}, "unknown key"),
    ({"expert": ["codec", "eg"]}, "expert= must be a dict"),
    ({"expert": {"quantizer": "bogus"}}, "quantizer"),
    ({"expert": {"codec": "zip"}}, "codec="),
    ({"expert": {"rdoq": -1}}, "rdoq"),
    ({"expert": {"rel_step": -1}}, "rel_step"),
    ({"expert": {"quantizer": "dq", "rdoq": 0.12}}, "rdoq"),
    ({"expert": {"quantizer": "dq", "codec": "eg"}}, "eg"),
    ({"rel_error": 0}, "rel_error"),
    ({"rel_error": float("nan")}, "rel_error"),
    ({"exact": 3}, "exact="),
    ({"max_error": 1e-3, "sensitivity": {"a.weight": 1.0, "b.weight": 1.0}}, "sensitivity"),
]


@pytest.mark.parametrize("kw, match", BAD)
def test_conflicts_and_bad_values_raise_encode_error(kw, match, tmp_path):
    t = _tensors()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(EncodeError, match=match):
            bslcodec.save_file(t, tmp_path / "x.bsl", **kw)
    assert not list(tmp_path.iterdir())


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="lossles"):
        bslcodec.save({"w": np.ones(4, np.float32)}, lossles=True)


def test_encode_checkpoint_old_and_new(tmp_path):
    from bslcodec.files.checkpoint import encode_checkpoint

    np.savez(tmp_path / "m.npz", **_tensors(4))
    _, w = _calls(lambda **kw: encode_checkpoint(tmp_path / "m.npz", tmp_path / "old.bsl", progress=False, **kw),
                  {"rel_step": 0.25, "quantizer": "dq", "lossless": ["a.*"]})
    _, q = _calls(lambda **kw: encode_checkpoint(tmp_path / "m.npz", tmp_path / "new.bsl", progress=False, **kw),
                  {"exact": ["a.*"], "expert": {"rel_step": 0.25, "quantizer": "dq"}})
    assert len(w) == 1 and not q
    assert (tmp_path / "old.bsl").read_bytes() == (tmp_path / "new.bsl").read_bytes()


def test_cli_new_flags_and_old_flags_write_the_same_file(tmp_path):
    pytest.importorskip("safetensors.numpy")
    from click.testing import CliRunner
    from safetensors.numpy import save_file as st_save

    from bslcodec.cli import main

    st_save(_tensors(5), str(tmp_path / "m.safetensors"))

    def run(*args):
        return CliRunner().invoke(main, ["encode", str(tmp_path / "m.safetensors"), *map(str, args), "--overwrite"],
                                  catch_exceptions=False)

    cases = [(["--rel-step", "0.1", "--codec", "eg", "--lossless", "a.*"],
              ["--expert", "rel_step=0.1", "--expert", "codec=eg", "--exact", "a.*"]),
             (["--lossless-all"], ["--exact", "*"]),
             (["--bits", "4", "--rdoq", "0.12"], ["--bits", "4", "--expert", "rdoq=0.12"]),
             (["--max-error", "1e-3", "--quantizer", "dq"], ["--max-error", "1e-3", "--expert", "quantizer=dq"])]
    for old, new in cases:
        r_old, r_new = run(tmp_path / "old.bsl", *old), run(tmp_path / "new.bsl", *new)
        assert r_old.exit_code == 0 and r_new.exit_code == 0, (r_old.stderr, r_new.stderr)
        assert (tmp_path / "old.bsl").read_bytes() == (tmp_path / "new.bsl").read_bytes(), old
        assert "deprecated" in r_old.stderr and "deprecated" not in r_new.stderr
    r = run(tmp_path / "x.bsl", "--rel-error", "0.01")
    assert r.exit_code == 0
    assert (tmp_path / "x.bsl").read_bytes() == bslcodec.save(_tensors(5), rel_error=0.01, metadata={
        "bslcodec.source_format": "safetensors"})
    for args, match in ((["--expert", "codex=eg"], "KEY=VALUE"), (["--expert", "rel_step=x"], "number"),
                        (["--bits", "4", "--rel-error", "0.01"], "at most one"),
                        (["--expert", "quantizer=bogus"], "quantizer"),
                        (["--rel-step", "0.1", "--expert", "rel_step=0.2"], "not both")):
        r = run(tmp_path / "y.bsl", *args)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code != 0 and len(lines) == 1 and match in lines[0], r.stderr
    assert not (tmp_path / "y.bsl").exists()


def test_rate_loss_and_save_trained_take_both():
    torch = pytest.importorskip("torch")
    from bslcodec.torch import RateLoss, save_trained

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(300, 256), torch.nn.ReLU(), torch.nn.Linear(256, 300))
    a, w = _calls(lambda **kw: save_trained(model, **kw), {"rel_step": 1 / 16, "quantizer": "uniform",
                                                           "lossless": ["0.*"]})
    b, q = _calls(lambda **kw: save_trained(model, **kw), {"expert": {"rel_step": 1 / 16, "quantizer": "uniform"},
                                                           "exact": ["0.*"]})
    assert a == b and len(w) == 1 and not q
    r1, w = _calls(lambda **kw: RateLoss(model, 0.1, **kw), {"rel_step": 1 / 8})
    r2, _ = _calls(lambda **kw: RateLoss(model, 0.1, **kw), {"expert": {"rel_step": 1 / 8}})
    assert len(w) == 1 and float(r1()) == float(r2())
    with pytest.raises(EncodeError, match="codec"):
        RateLoss(model, 0.1, expert={"codec": "eg"})
