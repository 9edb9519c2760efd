"""Rewrite a snapgen pipeline folder of the older layout (``pipeline.json`` + ``unet/``, ``text/``, ``decoder/``; e.g. the
shipped world-tiny) in the diffusers layout that ``DiffusionPipeline.from_pretrained`` reads.

    python -m snapgen.convert snapgen/weights/world-tiny/pipeline /tmp/world-tiny-diffusers
    python -c "import snapgen.pipeline, diffusers; p = diffusers.DiffusionPipeline.from_pretrained('/tmp/world-tiny-diffusers'); p('a red cube').images[0].save('x.png')"

The weights are copied tensor for tensor (images are bit-identical, tests/test_diffusers_pipeline.py); the source
folder is only read.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from snapgen.io import require_path


def convert(src: str | Path, dst: str | Path) -> Path:
    from snapgen.pipeline import SnapGenPipeline

    src = require_path(src, "source pipeline", "Pass a snapgen pipeline folder (pipeline.json, unet/).",
                       ("pipeline.json", "unet"))
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"--out {dst} exists and is not empty")
    return SnapGenPipeline.from_pretrained(src).save_pretrained(dst)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python -m snapgen.convert snapgen/weights/world-tiny/pipeline /tmp/wt")
    ap.add_argument("src", help="older-layout pipeline folder (pipeline.json)")
    ap.add_argument("dst", help="new folder (diffusers layout: model_index.json)")
    args = ap.parse_args(argv)
    print(convert(args.src, args.dst))


if __name__ == "__main__":
    main()
