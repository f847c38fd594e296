"""``python -m bslcodec.serve embed|generate FOLDER``: an OpenAI-compatible LitServe server for a model
folder of ``.bsl`` (or safetensors) weights."""

from __future__ import annotations

import sys

import click

from ..container.errors import BslError


def _run(kind: str, folder: str, host: str, port: int, accelerator: str, dtype, workers: int, timeout: float):
    try:
        import litserve as ls
    except ImportError:
        raise click.ClickException("serving needs LitServe: pip install 'bslcodec[serve]'") from None
    from .litserve import EmbeddingAPI, GenerationAPI
    from .models import _check_folder

    try:
        _check_folder(folder)
    except BslError as exc:
        raise click.ClickException(str(exc)) from None
    if kind == "embed":
        api = EmbeddingAPI(folder, dtype=dtype, spec=ls.OpenAIEmbeddingSpec())
    else:
        api = GenerationAPI(folder, dtype=dtype, spec=ls.OpenAISpec())
    server = ls.LitServer(api, accelerator=accelerator, workers_per_device=workers, timeout=timeout)
    server.run(host=host, port=port, generate_client_file=False)


def _options(f):
    f = click.option("--timeout", type=float, default=120.0, show_default=True,
                     help="Seconds a request may wait for its answer.")(f)
    f = click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
                     help="Model worker processes per device.")(f)
    f = click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                     show_default=True, help="Weights dtype in memory (auto: the config's).")(f)
    f = click.option("--accelerator", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="cuda decodes .bsl weights on the GPU.")(f)
    f = click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)(f)
    f = click.option("--host", default="127.0.0.1", show_default=True,
                     help="Interface to listen on (0.0.0.0: every interface).")(f)
    return click.argument("folder", type=click.Path(exists=True, file_okay=False))(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Serve a model folder written by 'bslcodec encode' (or the original safetensors folder) over HTTP
    with LitServe; GET /health answers 'ok' once the model is loaded."""


@main.command()
@_options
def embed(folder, host, port, accelerator, dtype, workers, timeout):
    """Sentence embeddings (sentence-transformers folder such as all-MiniLM-L6-v2):
    POST /v1/embeddings {"model": "...", "input": ["text", ...]}."""
    _run("embed", folder, host, port, accelerator, dtype, workers, timeout)


@main.command()
@_options
def generate(folder, host, port, accelerator, dtype, workers, timeout):
    """Chat completions from a causal LM folder:
    POST /v1/chat/completions {"messages": [{"role": "user", "content": "..."}], "temperature": 0}."""
    _run("generate", folder, host, port, accelerator, dtype, workers, timeout)


if __name__ == "__main__":
    sys.exit(main())
