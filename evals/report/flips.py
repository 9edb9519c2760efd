"""The compare view's data: records of one benchmark side by side, the first as A and each further one as B; per
metric B - A with the paired 95% CI of ``evals.compare`` (same prompts and seeds), and the samples whose verdict
flipped between A and B (the same prompt, seed and sample index, so the two images differ only by the model)."""
from __future__ import annotations

from evals.compare import compare

SAME_SAMPLES = ("benchmark", "prompt_set_sha256", "base_seed", "images_per_prompt", "seed_scheme")


def _key(card: dict) -> tuple:
    """Which card of B shows the same sample as a card of A."""
    return (card["group"], card.get("item_id")) if card.get("item_id") is not None else (card["index"], card["sample"])


def flipped(cards_a: list[dict], cards_b: list[dict]) -> list[dict]:
    """[{"a": card, "b": card}] for every sample whose verdict differs, A's order."""
    by_key = {_key(c): c for c in cards_b}
    return [{"a": c, "b": by_key[_key(c)]} for c in cards_a
            if _key(c) in by_key and by_key[_key(c)]["verdict"] != c["verdict"]]


def comparisons(sections: list[dict], records: dict[str, tuple[str, dict]]) -> list[dict]:
    """For every benchmark with two or more records: one comparison per further record against the first.
    ``records``: slug -> (path, record)."""
    by_bench: dict[str, list[dict]] = {}
    for s in sections:
        if s["benchmark"]:
            by_bench.setdefault(s["benchmark"], []).append(s)
    out = []
    for bench, group in by_bench.items():
        a = group[0]
        pa, ra = records[a["slug"]]
        for b in group[1:]:
            pb, rb = records[b["slug"]]
            result = compare(ra, pa, rb, pb)
            same = all(ra["protocol"].get(k) == rb["protocol"].get(k) for k in SAME_SAMPLES)
            out.append({"benchmark": bench, "a": a["slug"], "b": b["slug"], "a_name": a["name"], "b_name": b["name"],
                        "mismatch": result["mismatch"], "rows": result["rows"], "same_samples": same,
                        "flips": flipped(a["cards"], b["cards"]) if same else []})
    return out
