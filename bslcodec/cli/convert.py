"""``bslcodec encode``, ``decode`` and ``recode``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import click

from .group import (
    _g,
    _set_workers,
    _size,
    main,
    overwrite_option,
    quiet_option,
    workers_option,
)

# ---------------------------------------------------------------- encode / decode

def _expert_value(key: str, value: str):
    """The value of ``--expert KEY=VALUE`` as save_file's ``expert=`` takes it."""
    if key in ("quantizer", "codec"):
        return value
    if key == "rdoq" and value.lower() in ("on", "true", "off", "false"):
        return value.lower() in ("on", "true")
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{key} takes a number, not {value!r}", param_hint="--expert") from None


def _parse_expert(items) -> dict:
    from ..pipeline.knobs import EXPERT_KEYS

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in EXPERT_KEYS:
            raise click.BadParameter(f"{item!r}: give KEY=VALUE with KEY one of {', '.join(EXPERT_KEYS)}",
                                     param_hint="--expert")
        if key in out:
            raise click.BadParameter(f"{key} given twice", param_hint="--expert")
        out[key] = _expert_value(key, value)
    return out


# old flag -> (expert key or None for --exact, its new spelling); hidden in --help, one warning line each
_OLD_FLAGS = {"rel_step": ("--rel-step", "--expert rel_step=C"), "lossless": ("--lossless", "--exact PATTERN"),
              "lossless_all": ("--lossless-all", "--exact '*'"), "codec": ("--codec", "--expert codec=NAME"),
              "rdoq": ("--rdoq", "--expert rdoq=C"), "quantizer": ("--quantizer", "--expert quantizer=NAME")}


@main.command(epilog="Expert keys (--expert KEY=VALUE, repeatable): quantizer=auto|uniform|dq (auto: dq, the "
                     "dependent (trellis) quantization, codec ans-dq, ~0.17 bits/weight smaller at the same mean "
                     "squared error, error <= 1.5 steps; plain rounding (error <= step/2) with --max-error, a named "
                     "codec or rdoq); codec=auto|eg|ans (auto: the smaller per tensor; eg: exp-Golomb, the GPU's "
                     "layer-by-layer format); rdoq=C (rate-distortion optimised plain rounding, lambda = C x "
                     "step^2, 0.12 tested; bound one step; off by default); rel_step=C (no allocation: every "
                     "tensor's step = C x its std; no target then). The old flags --rel-step, --lossless, "
                     "--lossless-all, --codec, --rdoq and --quantizer still work (deprecated).")
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--bits", type=float, metavar="B",
              help="Target size: average B bits per weight over each output file (a shard with nothing to "
                   "allocate, e.g. only a norm vector, keeps its fixed steps; the summary gives the folder's), "
                   "steps split across tensors at "
                   "equal slope (each tensor's mean squared error counted once); warns when the weights' relative "
                   "L2 error exceeds 5 %.")
@click.option("--rel-error", type=float, metavar="R",
              help="Target quality: the same allocation with the root mean square over tensors of each "
                   "tensor's relative L2 error at R (default, with no target: 2^-8 = 0.0039).")
@click.option("--max-error", type=float, metavar="E", help="Guarantee: every weight within E of the original.")
@click.option("--exact", multiple=True, metavar="PATTERN",
              help="Store tensors whose names match this fnmatch pattern bit-exact (repeatable; '*': every "
                   "tensor, floats as fexp where it beats zstd).")
@click.option("--sensitivity", type=click.Path(path_type=Path, exists=True, dir_okay=False), metavar="JSON",
              help="JSON {tensor name: sensitivity} (from bslcodec.calibrate.sensitivity or .fisher): the "
                   "allocation weighs each tensor's squared error by it (with rel_step: steps follow sqrt(n/s)).")
@click.option("--expert", multiple=True, metavar="KEY=VALUE",
              help="Escape hatch (repeatable): quantizer, codec, rdoq or rel_step; see below.")
@click.option("--rel-step", type=float, hidden=True)
@click.option("--lossless", multiple=True, hidden=True)
@click.option("--lossless-all", is_flag=True, default=None, hidden=True)
@click.option("--codec", type=click.Choice(["auto", "eg", "ans"]), hidden=True)
@click.option("--rdoq", type=float, hidden=True)
@click.option("--quantizer", type=click.Choice(["auto", "uniform", "dq"]), hidden=True)
@workers_option
@overwrite_option
@quiet_option
def encode(input, output, bits, rel_error, max_error, exact, sensitivity, expert, workers, overwrite, quiet,
           **old):
    """Encode INPUT (.safetensors, torch .pt/.bin, .npz, or a Hugging Face model folder) to OUTPUT.

    At most one target: --bits, --rel-error or --max-error (default: --rel-error 2^-8).

    A folder gives a folder: model.bsl (or model-0000i-of-0000n.bsl shards with model.bsl.index.json
    when the input was sharded) plus every non-weight file (config, tokenizer) copied unchanged.
    Under torchrun (WORLD_SIZE > 1) the ranks share a folder's files (same bytes as one process); the
    output folder must be on a file system every rank sees.
    Torch files are read with torch.load(weights_only=True): nothing else is unpickled.
    """
    from ..files.checkpoint import check_settings, encode_checkpoint

    old = {k: v for k, v in old.items() if v is not None and v is not False and v != ()}
    # after a successful run (an error stays one line), not with --quiet
    notes = [f"warning: {_OLD_FLAGS[k][0]} is deprecated; use {_OLD_FLAGS[k][1]}" for k in old]
    expert = _parse_expert(expert)
    for k, flag in (("rel_step", "--rel-step"), ("codec", "--codec"), ("rdoq", "--rdoq"),
                    ("quantizer", "--quantizer")):
        if k in old:
            if k in expert:
                raise click.UsageError(f"give --expert {k}=... or {flag}, not both")
            expert[k] = old[k]
    exact = list(exact) + list(old.get("lossless", ())) + (["*"] if old.get("lossless_all") else [])
    given = [n for n, v in (("--bits", bits), ("--rel-error", rel_error), ("--max-error", max_error),
                            ("--expert rel_step", expert.get("rel_step"))) if v is not None]
    if len(given) > 1:
        raise click.UsageError(f"give at most one of --bits, --rel-error, --max-error (or --expert rel_step), "
                               f"got {' and '.join(given)}")
    for name, v in (("--max-error", max_error), ("--rel-error", rel_error), ("--bits", bits),
                    ("--expert rel_step", expert.get("rel_step"))):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise click.BadParameter(f"must be a positive number, not {v}", param_hint=name)
    if bits is not None and bits.is_integer() and bits < 2 ** 53:
        bits = int(bits)  # as save_file(bits=4) records it: "--bits 4" and the API write the same bytes
    knobs = check_settings(bits=bits, rel_error=rel_error, max_error=max_error, exact=tuple(exact),
                           expert=expert)
    sens = None
    if sensitivity is not None:
        try:
            sens = json.loads(sensitivity.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise click.BadParameter(f"cannot read {sensitivity}: {exc}", param_hint="--sensitivity") from None
        if not isinstance(sens, dict):
            raise click.BadParameter(f"{sensitivity} must hold a JSON object", param_hint="--sensitivity")
    _set_workers(workers)
    from ..files.pool import unpooled_large

    unpooled_large()  # freed arrays go back to the system: the peak stays bounded at any thread count
    kw = dict(knobs.new_kwargs(), sensitivity=sens, overwrite=overwrite, progress=not quiet)
    import warnings

    from ..container.errors import QualityWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QualityWarning)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: this rank's share of the files
            from ..files.distributed import encode_checkpoint_distributed

            res = encode_checkpoint_distributed(input, output, **kw)
        else:
            res = encode_checkpoint(input, output, **kw)
    for w in caught:  # one line each (shown with --quiet too: the file may be unusable)
        if issubclass(w.category, QualityWarning):
            click.echo(f"warning: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
        return
    if not quiet:
        for note in notes:
            click.echo(note, err=True)
        if res.skipped:
            click.echo(f"note: not copied (other copies of the weights): {', '.join(res.skipped)}", err=True)
        extra = ""
        steps = [r for r in res.rel_steps if r is not None]
        if steps:
            extra = f", rel_step {_g(min(steps))}" + (f"..{_g(max(steps))}" if max(steps) != min(steps) else "")
        click.echo(f"{input} ({_size(res.in_bytes)}) -> {output} ({_size(res.out_bytes)}): "
                   f"ratio {res.ratio:.2f}x, {res.bits_per_weight:.2f} bits/weight, {res.n_tensors} tensors, "
                   f"{res.seconds:.1f} s{extra}")


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@workers_option
@overwrite_option
@quiet_option
def decode(input, output, workers, overwrite, quiet):
    """Decode INPUT (.bsl file or encoded folder) to OUTPUT.

    The format follows OUTPUT's suffix: .pt/.pth/.bin (torch.save), .npz, else .safetensors. An
    encoded folder decodes to a folder: model.safetensors (or safetensors shards with
    model.safetensors.index.json) plus the copied files, loadable by transformers.
    """
    from ..files.checkpoint import decode_checkpoint

    _set_workers(workers)
    res = decode_checkpoint(input, output, overwrite=overwrite, progress=not quiet)
    if not quiet:
        click.echo(f"{input} ({_size(res.in_bytes)}, {res.bits_per_weight:.2f} bits/weight) -> {output} "
                   f"({_size(res.out_bytes)}): {res.n_tensors} tensors, {res.seconds:.1f} s")


@main.command()
@click.argument("input", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--codec", type=click.Choice(["eg", "ans"]), required=True,
              help="Entropy stage of every lossy tensor in OUTPUT: eg (faster GPU decode per layer) or ans (smaller).")
@workers_option
@overwrite_option
@quiet_option
def recode(input, output, codec, workers, overwrite, quiet):
    """Re-code the lossy tensors of the .bsl file INPUT with another entropy stage into OUTPUT.

    The quantized values stay exactly the same (no second quantization): decoding OUTPUT gives the bytes
    that decoding INPUT gives. Lossless tensors, ans-dq tensors (the default quantizer's; they have no eg
    form) and metadata are copied.
    """
    import time

    from ..files.recode import recode_file

    _set_workers(workers)
    t0 = time.perf_counter()
    res = recode_file(input, output, codec=codec, overwrite=overwrite)
    if not quiet:
        click.echo(f"{input} -> {output} ({_size(res['file_bytes'])}): {res['recoded']} of {res['tensors']} tensors "
                   f"re-coded to {codec}, payloads {_size(res['payload_bytes_before'])} -> "
                   f"{_size(res['payload_bytes_after'])}, {time.perf_counter() - t0:.1f} s")

