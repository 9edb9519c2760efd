"""Rewrite a snapgen pipeline folder of the older layout (``pipeline.json`` + ``unet/``, ``text/``, ``decoder/``) in
the diffusers layout that ``DiffusionPipeline.from_pretrained`` reads, or add that layout's index files to it in place.

    python -m snapgen.convert SRC DST          # a new folder: every component re-saved (tensor for tensor)
    python -m snapgen.convert --index-only DIR # in place: model_index.json, scheduler/, text_encoder/ (, vae/) added;
                                               # unet/, text/, decoder/ and pipeline.json are left as they are
    python -c "import snapgen.pipeline, diffusers; p = diffusers.DiffusionPipeline.from_pretrained('DIR'); p('a red cube').images[0].save('x.png')"

The copy's weights equal the source's tensor for tensor (images are bit-identical, tests/test_diffusers_pipeline.py),
but ``unet/diffusion_pytorch_model.safetensors`` is written anew (another file hash). ``--index-only`` keeps every
existing file byte for byte, which is how the shipped world-tiny (whose files ``manifest.json`` pins) became
loadable by ``DiffusionPipeline``: the U-Net is read from its own ``unet/``, the text stack from the new
``text_encoder/config.json`` (the older ``text/`` stays for the older loader, ``snapgen.pipeline.load_legacy``).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from snapgen.io import require_path

_HOW = "Pass a snapgen pipeline folder (pipeline.json, unet/)."


def convert(src: str | Path, dst: str | Path) -> Path:
    from snapgen.pipeline import SnapGenPipeline

    src = require_path(src, "source pipeline", _HOW, ("pipeline.json", "unet"))
    if not str(dst).strip():
        raise ValueError("DST '': empty path; pass a new folder for the converted pipeline")
    dst = Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"DST {dst} is SRC; to add the diffusers index files in place use: "
                         f"python -m snapgen.convert --index-only {src}")
    if dst.is_dir() and any(dst.iterdir()):
        raise FileExistsError(f"DST {dst} exists and is not empty; pass a new (or empty) folder: convert never "
                              "overwrites")
    return SnapGenPipeline.from_pretrained(src).save_pretrained(dst)


def write_index(folder: str | Path) -> list[Path]:
    """Add the diffusers index files to an older-layout pipeline ``folder`` in place; returns the files written.

    The folder is read with the older loader and saved by ``SnapGenPipeline.save_pretrained`` into a temporary
    folder; everything that save wrote outside ``unet/`` (and other than ``pipeline.json``) is copied in:
    ``model_index.json``, ``scheduler/scheduler_config.json``, ``text_encoder/`` and ``vae/`` (a text stack with
    trainable projections or a decoder bring their weights, tensor for tensor, under diffusers' file names; the
    older ``text/`` and ``decoder/`` stay). No existing file is changed: the re-saved ``unet/`` and
    ``pipeline.json`` must describe the same model as the folder's own (same tensors, same settings), and a file
    already present must have the same bytes (running it twice is a no-op) or it is an error."""
    import json

    from safetensors.torch import load_file

    from snapgen.io import atomic_write_bytes
    from snapgen.pipeline import load_legacy

    folder = require_path(folder, "pipeline folder", _HOW, ("pipeline.json", "unet"))
    pipe = load_legacy(folder)
    with tempfile.TemporaryDirectory(prefix="snapgen-index-") as tmp:
        saved = pipe.save_pretrained(Path(tmp) / "p")
        if json.loads((saved / "pipeline.json").read_text()) != json.loads((folder / "pipeline.json").read_text()):
            raise ValueError(f"{folder}/pipeline.json does not round-trip through the pipeline; convert it instead: "
                             f"python -m snapgen.convert {folder} NEW_FOLDER")
        weights = "unet/diffusion_pytorch_model.safetensors"
        old, new = load_file(str(folder / weights)), load_file(str(saved / weights))
        if old.keys() != new.keys() or not all(old[k].dtype == new[k].dtype and old[k].equal(new[k]) for k in old):
            raise ValueError(f"{folder / weights} does not load tensor for tensor; convert the folder instead")
        files = sorted(p.relative_to(saved) for p in saved.rglob("*") if p.is_file()
                       and p.relative_to(saved).parts[0] != "unet" and p.name != "pipeline.json")
        clash = [str(r) for r in files if (folder / r).exists() and (folder / r).read_bytes() != (saved / r).read_bytes()]
        if clash:
            raise FileExistsError(f"{folder} already has {clash} with other contents; not overwritten")
        written = []
        for rel in files:
            if not (folder / rel).exists():
                written.append(atomic_write_bytes(folder / rel, (saved / rel).read_bytes()))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snapgen.convert", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples: python -m snapgen.convert snapgen/weights/world-tiny/pipeline /tmp/wt\n"
                                        "          python -m snapgen.convert --index-only runs/world-tiny/pipeline")
    ap.add_argument("src", help="older-layout pipeline folder (pipeline.json)")
    ap.add_argument("dst", nargs="?", help="new folder (diffusers layout: model_index.json); not with --index-only")
    ap.add_argument("--index-only", action="store_true",
                    help="add model_index.json, scheduler/, text_encoder/ (, vae/) to SRC in place; no file in it "
                         "is changed (the U-Net weights keep their bytes)")
    args = ap.parse_args(argv)
    if args.index_only == (args.dst is not None):
        ap.error("pass SRC DST, or --index-only SRC")
    if args.index_only:
        written = write_index(args.src)
        print("\n".join(str(p) for p in written) if written else f"{args.src}: index files already present")
    else:
        print(convert(args.src, args.dst))
    return 0


if __name__ == "__main__":
    from snapgen.cli import run_cli

    raise SystemExit(run_cli(main))
