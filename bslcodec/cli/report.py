"""``bslcodec info``: the per-tensor table of a .bsl file or encoded folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .group import META, _g, _size, _table, main

# ---------------------------------------------------------------- info

def _tensor_info(e) -> dict:
    from ..container.dtypes import NUMPY_DTYPES
    from ..container.format import QUANTIZED_CODECS

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

    from ..files.readers import BslFile, bsl_files
    from ..container.format import QUANTIZED_CODECS

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

