"""The ``bslcodec`` command line: ``encode``, ``decode``, ``info``, ``verify``.

::

    bslcodec encode model.safetensors model.bsl [--bits B | --rel-error R | --max-error E] [--exact PAT]...
    bslcodec encode model.safetensors model.bsl --exact '*'              # every tensor bit-exact
    bslcodec encode model.safetensors model.bsl --bits 4 --expert codec=eg
    bslcodec encode ./my-hf-model ./my-hf-model-bsl          # a folder in gives a folder out
    bslcodec decode model.bsl model.safetensors              # or .pt / .npz, by the suffix
    bslcodec info model.bsl [--json]
    bslcodec verify model.bsl [--against model.safetensors [--max-error E | --rel-step C]]

Errors print one line (``bslcodec: error: ...``) and exit non-zero; outputs are staged and renamed into
place, so a failed, interrupted (Ctrl-C) or terminated (SIGTERM, SIGHUP) run leaves nothing behind, and a
run killed outright (SIGKILL) leaves a ``.<output>.<pid>-<random>.bsl-tmp`` that the next run to the same
output removes. Exit codes: 0 success, 1 error or failed verification, 2 bad usage, 130 interrupted,
143 terminated (129 hung up).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path

import click

from . import __version__
from .container.errors import BslError
from .pipeline.codec import QUANTIZED_CODECS
from .quantize.dq import BOUND_FACTOR as DQ_BOUND_FACTOR

META = "bslcodec."


# ---------------------------------------------------------------- error handling

class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like KeyboardInterrupt, so staged outputs are removed."""


def _raise_terminated(signum, frame):
    raise _Terminated(signum)


@contextlib.contextmanager
def _signals_unwind():
    """SIGTERM/SIGHUP raise _Terminated (their default action kills the process on the spot, leaving the
    staged output behind); the previous handlers come back afterwards. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            old[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class _Cli(click.Group):
    """A click group whose every error is one line on stderr and a non-zero exit (no traceback)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            with _signals_unwind():
                rv = super().main(args, prog_name or "bslcodec", complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(f"{exc.format_message()}{hint}", exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("interrupted", 130)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except _Terminated as exc:
            _fail("terminated", 128 + int(exc.args[0]))
        except BslError as exc:
            _fail(str(exc), 1)
        except MemoryError:
            _fail("out of memory", 1)
        except OSError as exc:  # disk full, permission denied, ...
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{where}{exc.strerror or exc}", 1)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message: str, code: int):
    message = " ".join(str(message).split("\n")[0].split()) or "failed"
    click.echo(f"bslcodec: error: {message}", err=True)
    sys.exit(code)


def _set_workers(workers):
    """``--workers N``: threads (the encoder's tensor threads and the Numba threads of the codec's kernels,
    which run groups of weights in parallel); the default: every core Numba found (encode: the cores this
    process may use less those the machine's load keeps busy)."""
    if workers is None:
        return
    import numba

    from .files import pool

    top = numba.config.NUMBA_NUM_THREADS
    if not 1 <= workers <= top:
        raise click.BadParameter(f"must be between 1 and {top} (the cores Numba found)", param_hint="--workers")
    numba.set_num_threads(workers)
    pool.set_threads(workers)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def _g(x, digits=4) -> str:
    """A number for a table; "?" for what a (hostile) file put where a number belongs."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "?"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    try:
        return f"{x:.{digits}g}"
    except OverflowError:  # a JSON integer beyond binary64
        return "?"


def _table(rows: list, header: list, right: set) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


workers_option = click.option("--workers", type=int, metavar="N",
                              help="Threads (encode: tensors coded side by side; the codec's Numba kernels). Default: every "
                                   "core (encode: those the machine's load leaves idle).")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="bslcodec")
def main():
    """Small neural-network checkpoints (.bsl): encode, decode, inspect and verify them."""


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
    from .pipeline.knobs import EXPERT_KEYS

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
    from .files.checkpoint import check_settings, encode_checkpoint

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
    kw = dict(knobs.new_kwargs(), sensitivity=sens, overwrite=overwrite, progress=not quiet)
    import warnings

    from .container.errors import QualityWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QualityWarning)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: this rank's share of the files
            from .files.distributed import encode_checkpoint_distributed

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
    from .files.checkpoint import decode_checkpoint

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

    from .files.recode import recode_file

    _set_workers(workers)
    t0 = time.perf_counter()
    res = recode_file(input, output, codec=codec, overwrite=overwrite)
    if not quiet:
        click.echo(f"{input} -> {output} ({_size(res['file_bytes'])}): {res['recoded']} of {res['tensors']} tensors "
                   f"re-coded to {codec}, payloads {_size(res['payload_bytes_before'])} -> "
                   f"{_size(res['payload_bytes_after'])}, {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------- info

def _tensor_info(e) -> dict:
    from .container.dtypes import NUMPY_DTYPES

    raw = e.numel * NUMPY_DTYPES[e.dtype].itemsize
    p = e.params if e.codec in QUANTIZED_CODECS else {}
    return {"name": e.name, "dtype": e.dtype, "shape": list(e.shape), "codec": e.codec,
            "gg_nu": p.get("gg_nu"), "gg_scale": p.get("gg_scale"), "step": p.get("step"), "eg_order": p.get("k"),
            "max_abs_error": p.get("max_abs_error"), "elements": e.numel, "raw_bytes": raw, "bytes": e.length,
            "bits_per_weight": 8 * e.length / e.numel if e.numel else None,
            "ratio": raw / e.length if e.length else None}


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(file, as_json):
    """Per-tensor table of a .bsl file or encoded folder: codec, GG fit, step, EG order, bits/weight, ratio."""
    import os

    from .files.readers import BslFile, bsl_files

    files, out = bsl_files(file), []
    for path in files:
        with BslFile(path) as f:
            ix = f._f._src.index
            out.append({"path": str(path), "size": os.path.getsize(path), "metadata": f.metadata,
                        "version": f"1.{ix.minor}", "header_bytes": ix.data_start,
                        "header_json_bytes": ix.json_bytes, "header_compressed": bool(ix.flags & 1),
                        "tensors": [_tensor_info(e) for e in f.entries()]})
    tensors = [t for f in out for t in f["tensors"]]
    n_el = sum(t["elements"] for t in tensors)
    raw = sum(t["raw_bytes"] for t in tensors)
    size = sum(f["size"] for f in out)
    total = {"files": len(out), "tensors": len(tensors), "lossy_tensors": sum(t["codec"] in QUANTIZED_CODECS for t in tensors),
             "elements": n_el, "raw_bytes": raw, "bytes": size,
             "bits_per_weight": 8 * size / n_el if n_el else None, "ratio": raw / size if size else None}
    if as_json:
        click.echo(json.dumps({"files": out, "total": total}, indent=2))
        return
    for f in out:
        how = f"zstd, {_size(f['header_json_bytes'])} of JSON" if f["header_compressed"] else "JSON"
        click.echo(f"{f['path']}: {_size(f['size'])}, {len(f['tensors'])} tensors, .bsl {f['version']}, "
                   f"preamble + header {_size(f['header_bytes'])} ({how})")
        settings = f["metadata"].get(META + "settings")
        if settings:
            click.echo(f"settings: {settings}")
        rows = [[t["name"], t["dtype"], "x".join(map(str, t["shape"])) or "()", t["codec"], _g(t["gg_nu"], 3),
                 _g(t["gg_scale"]), _g(t["step"]), _g(t["eg_order"]), _g(t["bits_per_weight"], 3),
                 _g(t["ratio"], 3)] for t in f["tensors"]]
        click.echo(_table(rows, ["name", "dtype", "shape", "codec", "GG shape", "GG scale", "step", "EG k",
                                 "bits/w", "ratio"], right={4, 5, 6, 7, 8, 9}))
        click.echo()
    click.echo(f"total: {total['tensors']} tensors ({total['lossy_tensors']} quantized) in {len(out)} file(s), "
               f"{n_el:,} weights, {_size(raw)} -> {_size(size)}, ratio {_g(total['ratio'], 3)}, "
               f"{_g(total['bits_per_weight'], 4)} bits/weight")


# ---------------------------------------------------------------- verify

def _bound_ok(e, x, xh, settings: dict, user: dict):
    """(bound shown, every element within it) for a decoded tensor against its original.

    ``user``: the bound the user gives (``max_error`` E: every element within E; ``rel_step`` C: within
    C x std of the original, the loosest bound any quantizer gives at that rel_step (one step, with RDOQ),
    plus the rounding of the dtype). Without one, the bound the file records in its settings and steps,
    which a tampered file can inflate: the summary line says which was used.
    """
    import numpy as np

    from .pipeline.codec import finite_float
    from .quantize.quant import ROUNDING

    if e.codec not in QUANTIZED_CODECS:  # raw / zstd / fexp: bit-exact
        same = x.shape == xh.shape and x.dtype == xh.dtype and x.tobytes() == xh.tobytes()
        return 0.0, same
    x64 = x.astype(np.float64)
    err = np.abs(x64 - xh.astype(np.float64))
    rel, ab = ROUNDING[e.dtype]
    if user.get("max_error") is not None:
        bound = user["max_error"]
        return bound, bool(np.all(err <= bound))
    if user.get("rel_step") is not None:
        finite = x64[np.isfinite(x64)]
        bound = user["rel_step"] * float(finite.std()) * (1 + 1e-6) if finite.size else 0.0
        return bound, bool(np.all(err <= bound + rel * (2 * np.abs(x64) + err) + ab))
    if settings.get("max_error") is not None:
        bound = finite_float(settings["max_error"])
        return bound, bool(bound >= 0 and np.all(err <= bound))
    step = finite_float(e.params.get("step"))
    if e.codec == "ans-dq":
        bound = step * DQ_BOUND_FACTOR  # dependent quantization: 1.5 steps (bslcodec.quantize.dq)
    else:
        bound = step / (1 if settings.get("rdoq") else 2)  # RDOQ: one step (bslcodec.codecs.rdoq)
    with np.errstate(over="ignore"):  # values near the float64 limit: an infinite allowance is still right
        allowed = bound + rel * (2 * np.abs(x64) + err) + ab
    return bound, bool(bound >= 0 and np.all(err <= allowed))


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--against", type=click.Path(path_type=Path), metavar="ORIGINAL",
              help="Compare with the original checkpoint (file or folder, any input format).")
@click.option("--max-error", type=float, metavar="E",
              help="With --against: every quantized weight must be within E of the original.")
@click.option("--rel-step", type=float, metavar="C",
              help="With --against: every quantized weight must be within C x std of its original tensor "
                   "(the loosest bound of an encode with --expert rel_step=C), plus the rounding of its dtype.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@workers_option
@quiet_option
def verify(file, against, max_error, rel_step, as_json, workers, quiet):
    """Check every checksum of FILE (.bsl or encoded folder) and decode every tensor.

    With --against, also print each tensor's max abs error and relative L2 error and whether it is
    within the bound you give (--max-error E, or --rel-step C for a file encoded with --expert
    rel_step=C). Without one, the bound is the one FILE records (its --max-error, else step/2 (1.5 steps
    for ans-dq tensors, one step with rdoq) plus the rounding of the tensor's dtype), which a tampered file
    can inflate: give your own to trust the result. Losslessly stored tensors must be bit-exact. Exit code 1 on any failure.
    """
    import numpy as np

    from .container.dtypes import FLOAT_NAMES
    from .files.checkpoint import Progress, TensorLookup
    from .files.readers import BslFile, bsl_files
    from .pipeline.arrays import as_numpy

    user = {k: v for k, v in (("max_error", max_error), ("rel_step", rel_step)) if v is not None}
    if len(user) > 1:
        raise click.UsageError("give at most one of --max-error, --rel-step")
    for k, v in user.items():
        if not (math.isfinite(v) and v > 0):
            raise click.BadParameter(f"must be a positive number, not {v}", param_hint="--" + k.replace("_", "-"))
    if user and against is None:
        raise click.UsageError("--max-error / --rel-step need --against ORIGINAL (the tensors to compare with)")
    _set_workers(workers)
    files = bsl_files(file)
    orig = TensorLookup(against) if against is not None else None
    rows, failures, seen = [], [], set()
    sum_err2 = sum_x2 = 0.0  # sums of squares over total_scale^2
    total_scale = 0.0
    worst = 0.0
    try:
        for path in files:
            try:
                f = BslFile(path)
            except BslError as exc:
                failures.append(str(exc))
                continue
            with f:
                try:
                    settings = json.loads(f.metadata.get(META + "settings", "{}"))
                    settings = settings if isinstance(settings, dict) else {}
                except ValueError:
                    settings = {}
                bar = Progress(sum(f.nbytes(n) for n in f.keys()), f"verify {path.name}", not quiet)
                for e in f.entries():
                    bar.start(e.name)
                    seen.add(e.name)
                    row = {"name": e.name, "codec": e.codec, "ok": True, "problem": None, "max_abs_error": None,
                           "rel_l2_error": None, "bound": None}
                    rows.append(row)
                    try:
                        xh = f.get(e.name)
                    except BslError as exc:
                        row.update(ok=False, problem=str(exc))
                        failures.append(str(exc))
                        continue
                    finally:
                        bar.update(f.nbytes(e.name))
                    if orig is None:
                        continue
                    if e.name not in orig.where:
                        row.update(ok=False, problem=f"not in {against}")
                        failures.append(f"{e.name}: not in {against}")
                        continue
                    x = as_numpy(orig.get(e.name), e.name)
                    if x.shape != xh.shape or x.dtype != xh.dtype:
                        problem = f"original is {x.dtype} {x.shape}, file has {xh.dtype} {xh.shape}"
                        row.update(ok=False, problem=problem)
                        failures.append(f"{e.name}: {problem}")
                        continue
                    x64, xh64 = x.astype(np.float64), xh.astype(np.float64)
                    with np.errstate(all="ignore"):  # inf - inf, NaN, squares past 1e154: handled here
                        same = (x64 == xh64) | (np.isnan(x64) & np.isnan(xh64))
                        d = np.where(same, 0.0, xh64 - x64)
                        ad, ax = np.abs(d), np.abs(x64[np.isfinite(x64)])
                        mae = float(np.max(ad)) if d.size else 0.0
                        # sums of squares of x / scale: no overflow for float64 values near 1e308
                        scale = max(float(ax.max()) if ax.size else 0.0, float(ad[np.isfinite(ad)].max())
                                    if np.isfinite(ad).any() else 0.0) or 1.0
                        err2, x2 = float(np.sum((d / scale) ** 2)), float(np.sum((ax / scale) ** 2))
                    if e.dtype in FLOAT_NAMES:  # the overall relative error is over the float weights
                        top = max(total_scale, scale)  # sums kept over top^2: no overflow
                        r_old, r_new = (total_scale / top) ** 2, (scale / top) ** 2
                        sum_err2, sum_x2 = sum_err2 * r_old + err2 * r_new, sum_x2 * r_old + x2 * r_new
                        total_scale = top
                    bound, ok = _bound_ok(e, x, xh, settings, user)
                    worst = max(worst, mae)
                    row.update(max_abs_error=mae, bound=bound, ok=ok,
                               rel_l2_error=math.sqrt(err2 / x2) if x2 else (0.0 if err2 == 0 else math.inf))
                    if not ok:
                        row["problem"] = "over its bound" if e.codec in QUANTIZED_CODECS else "not bit-exact"
                        failures.append(f"{e.name}: {row['problem']} (max abs error {_g(mae)}, bound {_g(bound)})")
                bar.close()
        missing = sorted(set(orig.keys()) - seen) if orig is not None else []
        for name in missing:
            failures.append(f"{name}: in {against} but not in {file}")
    finally:
        if orig is not None:
            orig.close()
    rel_total = math.sqrt(sum_err2 / sum_x2) if sum_x2 else 0.0
    n_ok = sum(r["ok"] for r in rows)
    if as_json:
        click.echo(json.dumps({"ok": not failures, "tensors": rows, "missing": missing, "failures": failures,
                               "max_abs_error": worst if orig is not None else None,
                               "rel_l2_error": rel_total if orig is not None else None,
                               "bounds": ("yours: " + json.dumps(user) if user else "the file's own")
                               if orig is not None else None}, indent=2))
    else:
        if orig is not None and not quiet:
            table = [[r["name"], r["codec"], _g(r["max_abs_error"]), _g(r["rel_l2_error"]), _g(r["bound"]),
                      "ok" if r["ok"] else "FAIL"] for r in rows]
            click.echo(_table(table, ["name", "codec", "max abs err", "rel L2", "bound", "within"],
                              right={2, 3, 4}))
        for msg in failures:
            click.echo(f"FAIL {msg}", err=True)
        if orig is None:
            what = "checksums match, decoded"
        elif user:
            what = "within " + ", ".join(f"--{k.replace('_', '-')} {_g(v)}" for k, v in user.items())
        else:
            what = ("within the bounds the file itself records (a tampered file can inflate them: pass "
                    "--max-error or --rel-step to check yours)")
        stats = f" (max abs error {_g(worst)}, relative L2 error {_g(rel_total)})" if orig is not None else ""
        if failures:
            click.echo(f"verify FAILED: {len(failures)} problem(s); {n_ok} of {len(rows)} tensors ok{stats}")
        elif not quiet:
            click.echo(f"verify ok: {len(rows)} tensors in {len(files)} file(s), {what}{stats}")
    return 1 if failures else 0


if __name__ == "__main__":
    main()
