"""``bslcodec verify``: checksums, decoding, and each tensor's error against its bound."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from ..container.errors import BslError
from .group import META, _g, _set_workers, _table, main, quiet_option, workers_option

# ---------------------------------------------------------------- verify

def _bound_ok(e, x, xh, settings: dict, user: dict):
    """(bound shown, every element within it) for a decoded tensor against its original.

    ``user``: the bound the user gives (``max_error`` E: every element within E; ``rel_step`` C: within
    C x std of the original, the loosest bound any quantizer gives at that rel_step (one step, with RDOQ),
    plus the rounding of the dtype). Without one, the bound the file records in its settings and steps,
    which a tampered file can inflate: the summary line says which was used.
    """
    import numpy as np

    from ..pipeline.codec import QUANTIZED_CODECS, finite_float
    from ..quantize.dq import BOUND_FACTOR as DQ_BOUND_FACTOR
    from ..quantize.quant import ROUNDING

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

    from ..container.dtypes import FLOAT_NAMES
    from ..files.checkpoint import Progress, TensorLookup
    from ..files.readers import BslFile, bsl_files
    from ..pipeline.arrays import as_numpy
    from ..pipeline.codec import QUANTIZED_CODECS

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

