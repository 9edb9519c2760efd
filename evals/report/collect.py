"""Records -> report sections: plain data (scores, protocol, one card per sample) with the images copied into the
report folder. No HTML here (``evals.report.page`` renders it).

A card is ``{"id", "record", "group", "index", "verdict", "score", "prompt", "image", "image_size", "boxes",
"reason", "questions", "tile_scores"}``: ``group`` is the GenEval task or the DPG-Bench mode, ``verdict`` is
"correct" / "incorrect" (DPG-Bench: every question of every tile answered yes, or not) / "failed", ``image`` is
a path relative to the report folder or None when the sample's image is gone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from snapgen.paths import REPO_ROOT

THUMB = 256                      # longest side of a copied image; smaller images are copied unchanged


@dataclass
class Entry:
    path: str                    # the record file as given
    rec: dict                    # the record (snapgen.records envelope)
    rows: list[dict] | None      # per-sample rows (None: the benchmark writes none)
    slug: str                    # unique, file-name-safe id inside the report


@dataclass
class ImageStore:
    """Copies (thumbnails) source images into ``<out>/images/`` once each; returns report-relative paths."""
    out: Path
    thumb: int = THUMB
    done: dict[str, str | None] = field(default_factory=dict)

    def add(self, src: Path | None, name: str) -> str | None:
        if src is None:
            return None
        key = str(src)
        if key not in self.done:
            self.done[key] = self._copy(src, name)
        return self.done[key]

    def _copy(self, src: Path, name: str) -> str | None:
        from PIL import Image

        rel = f"images/{name}.png"
        dest = self.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(src) as im:
                im = im.convert("RGB")
                if max(im.size) > self.thumb:
                    im.thumbnail((self.thumb, self.thumb), Image.Resampling.LANCZOS)
                im.save(dest, optimize=True)
        except OSError:
            return None
        return rel


def resolve(path: str | None, *extra: Path) -> Path | None:
    """A path as written in a record (absolute, repo-relative or cwd-relative) -> an existing file, else the first
    of ``extra`` that exists, else None."""
    candidates = ([Path(path), REPO_ROOT / path] if path else []) + list(extra)
    return next((c for c in candidates if c.is_file()), None)


def geneval_cards(e: Entry, store: ImageStore) -> list[dict]:
    images_dir = Path(e.rec["protocol"].get("images_dir") or ".")
    if not images_dir.is_absolute():
        images_dir = REPO_ROOT / images_dir
    cards = []
    for r in sorted(e.rows, key=lambda r: (r["prompt_index"], r["sample_index"])):
        pi, si = r["prompt_index"], r["sample_index"]
        src = resolve(r.get("filename"), images_dir / f"{pi:05d}" / "samples" / f"{si:04d}.png")
        d = r.get("details") or {}
        boxes = [{"class": cls, **det} for cls, dets in (d.get("kept") or {}).items() for det in dets]
        cards.append({"id": f"{e.slug}-{pi}-{si}", "record": e.slug, "group": r["tag"], "index": pi,
                      "sample": si, "verdict": "correct" if r["correct"] else "incorrect",
                      "score": float(r["correct"]), "prompt": r["prompt"], "reason": r.get("reason") or "",
                      "image": store.add(src, f"{e.slug}/{pi:05d}_{si:02d}"), "image_size": d.get("image_size"),
                      "boxes": boxes, "detections_recorded": "kept" in d, "threshold": d.get("threshold"), "questions": None, "tile_scores": None})
    return cards


def dpg_cards(e: Entry, store: ImageStore) -> list[dict]:
    prompts = _dpg_prompts(e)
    cards = []
    for i, r in enumerate(sorted(e.rows, key=lambda r: (_natural(r["item_id"]), r["mode"]))):
        verdict = "failed" if r["status"] != "ok" else ("correct" if r["prompt_score"] == 1.0 else "incorrect")
        cards.append({"id": f"{e.slug}-{r['mode']}-{r['item_id']}", "record": e.slug, "group": r["mode"],
                      "index": i, "sample": None, "verdict": verdict, "score": r.get("prompt_score"),
                      "prompt": prompts.get(r["item_id"], r["item_id"]), "item_id": r["item_id"],
                      "reason": r.get("error") or "", "image": store.add(resolve(r.get("image")),
                                                                         f"{e.slug}/{r['item_id']}"),
                      "image_size": None, "boxes": [], "threshold": None, "questions": r.get("questions") or [],
                      "tile_scores": r.get("tile_scores")})
    return cards


def _natural(item_id: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", item_id)]


def _dpg_prompts(e: Entry) -> dict[str, str]:
    """item_id -> prompt text from the question CSV the record names (DPG rows carry only the item id)."""
    import csv

    path = resolve(e.rec["protocol"].get("questions_csv"))
    if path is None:
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["item_id"]: row["text"] for row in csv.DictReader(f) if row.get("item_id")}


def fid_grids(e: Entry, store: ImageStore, n: int = 16) -> dict:
    """The first ``n`` generated and ``n`` reference images, each as one grid image (or None when gone)."""
    from evals.metrics.features import list_images

    p = e.rec["protocol"]
    ref = p.get("reference") or {}
    out = {}
    for side, folder in (("generated", p.get("images_dir")), ("reference", ref.get("ref_dir") or ref.get("ref"))):
        path = Path(folder) if folder else None
        if path is not None and not path.is_absolute() and not path.is_dir():
            path = REPO_ROOT / path
        files = list_images(path)[:n] if path is not None and path.is_dir() else []
        out[side] = _grid(files, store.out / f"images/{e.slug}/fid_{side}.png") if files else None
        out[side] = out[side] and f"images/{e.slug}/fid_{side}.png"
        out[f"{side}_n"] = len(files)
    return out


def _grid(files: list[Path], dest: Path, tile: int = 64, cols: int = 4) -> bool:
    from PIL import Image

    rows = (len(files) + cols - 1) // cols
    grid = Image.new("RGB", (cols * tile, rows * tile), (255, 255, 255))
    for i, f in enumerate(files):
        with Image.open(f) as im:
            im = im.convert("RGB")
            resample = Image.Resampling.NEAREST if max(im.size) <= tile else Image.Resampling.LANCZOS
            grid.paste(im.resize((tile, tile), resample), ((i % cols) * tile, (i // cols) * tile))
    dest.parent.mkdir(parents=True, exist_ok=True)
    grid.save(dest, optimize=True)
    return True


CARDS = {"geneval": geneval_cards, "dpg": dpg_cards}      # benchmarks with per-sample cards


def section(e: Entry, store: ImageStore) -> dict:
    """Everything the page shows for one record."""
    bench = e.rec["protocol"].get("benchmark") if e.rec["kind"] == "evaluation" else None
    cards = CARDS[bench](e, store) if bench in CARDS and e.rows is not None else []
    return {"slug": e.slug, "path": e.path, "name": e.rec["name"], "kind": e.rec["kind"], "benchmark": bench,
            "scores": e.rec["scores"], "protocol": e.rec["protocol"], "environment": e.rec["environment"],
            "created": e.rec["created"], "cards": cards, "fid": fid_grids(e, store) if bench == "fid" else None}
