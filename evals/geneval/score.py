"""Score a folder in GenEval's official layout with any detector and colour classifier.

Layout (as djghosh13/geneval `generation/diffusers_generate.py` writes it):
    <folder>/NNNNN/metadata.jsonl          one JSON object: the prompt's evaluation metadata
    <folder>/NNNNN/samples/NNNN.png         the images of that prompt

Unlike the official scorer, which silently skips anything that is not ``\\d+.png``, an image in any other
format or an oddly named file in ``samples/`` is an error, and so is a prompt folder without images: a
half-written or JPEG-saved run must not score as if it were complete. Per-image exceptions propagate.
"""
from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps

from evals.geneval.rules import OFFICIAL, Detection, GenEvalRules, evaluate_image, summarize

SAMPLE_NAME = re.compile(r"^\d+\.png$")
ImageColorFn = Callable[[Image.Image, Detection], str]     # (image, detection) -> colour name


def list_samples(folder: str | Path) -> list[tuple[int, dict, list[Path]]]:
    """[(prompt_index, metadata, [png paths sorted by sample index])] for every NNNNN/ subfolder."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"GenEval image folder '{root}' does not exist")
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        meta_path = sub / "metadata.jsonl"
        if not meta_path.is_file():
            raise FileNotFoundError(f"'{meta_path}' is missing: every prompt folder needs its metadata.jsonl")
        with open(meta_path) as f:
            metadata = json.load(f)
        images = []
        for p in sorted((sub / "samples").iterdir()) if (sub / "samples").is_dir() else []:
            if p.name.startswith("."):
                continue                                    # .DS_Store, editor swap files
            if not SAMPLE_NAME.match(p.name):
                raise ValueError(f"'{p}' is not a GenEval sample: images must be PNG files named NNNN.png "
                                 "(the official scorer would silently skip it). Re-save it as PNG.")
            images.append(p)
        if not images:
            raise ValueError(f"prompt folder '{sub}' has no samples/NNNN.png images")
        out.append((int(sub.name), metadata, sorted(images, key=lambda p: int(p.stem))))
    if not out:
        raise ValueError(f"'{root}' holds no NNNNN/ prompt folders (GenEval layout)")
    return out


def check_complete(samples: list[tuple[int, dict, list[Path]]], n_per_prompt: int) -> list[str]:
    """The expected ``NNNNN/samples/NNNN.png`` files (sample 0..n_per_prompt-1 of every prompt folder) that are
    missing, plus any extra sample beyond ``n_per_prompt``, as 'missing: path' / 'extra: path' strings."""
    problems = []
    for prompt_index, _, paths in samples:
        have = {int(p.stem): p for p in paths}
        folder = paths[0].parent if paths else None
        problems += [f"missing: {folder / f'{k:04d}.png'}" for k in range(n_per_prompt) if k not in have]
        problems += [f"extra: {p}" for k, p in sorted(have.items()) if k >= n_per_prompt]
    return problems


def score_folder(folder: str | Path, detector: Callable[[Image.Image], dict[str, list[Detection]]],
                 classify_color: ImageColorFn | None = None,
                 rules: GenEvalRules = OFFICIAL) -> tuple[list[dict], dict]:
    """Score every image of ``folder``; returns (per-image rows, summary).

    detector(image) -> {class: [detection]} (raw, unfiltered); classify_color(image, detection) -> colour,
    needed only for detections without a "color". Rows: prompt_index, sample_index, tag, prompt, correct,
    reason, filename, metadata (JSON string, the official grouping key) and details (kept boxes, colours).
    """
    rows = []
    for prompt_index, metadata, paths in list_samples(folder):
        for path in paths:
            try:
                with Image.open(path) as im:
                    if im.format != "PNG":
                        raise ValueError(f"'{path}' is a {im.format} file named .png; GenEval needs real PNGs")
                    image = ImageOps.exif_transpose(im).convert("RGB")
            except OSError as e:                            # truncated or corrupt file: name it
                raise ValueError(f"'{path}' cannot be read as an image ({e}); regenerate or remove it") from None
            bound = partial(classify_color, image) if classify_color is not None else None
            correct, reason, details = evaluate_image(metadata, detector(image), image.size, bound, rules)
            rows.append({"prompt_index": prompt_index, "sample_index": int(path.stem), "tag": metadata["tag"],
                         "prompt": metadata["prompt"], "correct": correct, "reason": reason,
                         "filename": str(path), "metadata": json.dumps(metadata), "details": details})
    return rows, summarize(rows, rules)
