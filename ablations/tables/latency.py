"""The latency table: ``results/latency/**.json`` (+ architecture, decoder and Core ML export records) -> Markdown.

A pure function of the records (read through ``snapgen.records``, so malformed records are refused; sorted,
fixed formatting: re-running gives identical bytes). Rows are joined with the architecture records
(``results/architecture``: params, GFLOPs at 1024 px) and the decoder records (``results/decoders``: decoder
params); where the target is ``iphone`` the paper's iPhone 16 Pro Max numbers (U-Net 274 ms/step, decoder
~119 ms at 1024 px, 1.4 s end to end) are printed beside ours. Core ML export records (``results/coreml``)
get a second table.

    python -m ablations.tables latency           # writes results/tables/latency.md

Fields read (envelope of ``snapgen.records``):
    latency       protocol (target, resolution, dtype, steps, unet_batch, cfg, threads, compute_unit, compile),
                  scores <component>_ms_median/_p90, end_to_end_ms_median, end_to_end_estimate_ms,
                  details.model (name, variant, decoder, weights, tiny, params.unet), environment (cpu, gpu,
                  threads, device, device_os)
    architecture  name = variant; scores params, gflops_1024 (else gflops_<protocol.resolution_px>)
    decoder       name (else details.decoder); scores params (else details.params)
    export        protocol (component, resolution, batch, precision, compression, minimum_deployment_target),
                  scores params, n_ops, weight_bytes, trace_s, convert_s, total_s, rewrite_psnr_db,
                  parity_psnr_db; details.parity.status
"""
from __future__ import annotations

from pathlib import Path

from snapgen.records import read_records

PAPER_IPHONE = {  # SnapGen on an iPhone 16 Pro Max at 1024 px (SPEC.md section 1)
    "device": "iPhone 16 Pro Max", "resolution": 1024, "unet_step_ms": 274.0, "decoder_ms": 119.0,
    "end_to_end_s": 1.4, "end_to_end_range_s": (1.2, 2.3), "steps_range": (4, 8),
}
HEADER = [
    "# Latency table (generated from results/latency/**/*.json; do not edit)",
    "",
    "Milliseconds: median (p90) of N back-to-back calls after warm-up; load/compile time is in each record,",
    "never in these numbers. U-Net batch doubles under CFG. End to end: measured / sum of component medians",
    "(text + steps x U-Net + decoder). Params and GFLOPs (at 1024 px, FLOPs = 2 x MACs) joined from",
    "results/architecture; decoder params from results/decoders. 'random' = random weights (latency does not",
    f"depend on them). Paper: SnapGen on an {PAPER_IPHONE['device']} at 1024 px, shown on iphone rows only.",
    "",
    "| target | device | model | params (M) | GFLOPs@1024 | decoder | res (px) | dtype | U-Net batch | "
    "text ms | U-Net ms/step | decoder ms | steps | end to end ms | paper U-Net ms/step | paper decoder ms | "
    "paper end to end ms |",
    "|---|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
EXPORT_HEADER = [
    "", "## Core ML exports (results/coreml)", "",
    "| component | model | res (px) | batch | precision | compression | target | params (M) | ops | "
    "weights (MiB) | trace s | convert s | total s | rewrite PSNR dB | parity |",
    "|---|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
]


def _score(rec: dict, key: str):
    entry = rec["scores"].get(key)
    return None if entry is None else entry["value"]


def _number(rec: dict, *keys: str):
    """The first of ``keys`` found in scores, else in details (records of other kinds, read defensively)."""
    for key in keys:
        if key in rec["scores"]:
            return rec["scores"][key]["value"]
    for key in keys:
        if rec["details"].get(key) is not None:
            return rec["details"][key]
    return None


def _ms(rec: dict, part: str) -> str:
    median, p90 = _score(rec, f"{part}_ms_median"), _score(rec, f"{part}_ms_p90")
    return "—" if median is None else f"{median:.1f} ({p90:.1f})"


def _where(rec: dict) -> str:
    env, p = rec["environment"], rec["protocol"]
    if p["target"] == "iphone":
        return f"{env.get('device', 'iPhone')} {env.get('device_os', '')}, {p.get('compute_unit')}".strip()
    if p["target"] == "mac":
        return f"{env.get('cpu', 'Mac')}, {p.get('compute_unit')}"
    if p["target"] == "cuda":
        return env.get("gpu", "cuda")
    return f"{env.get('cpu', 'cpu')}, {p.get('threads') or env.get('threads')} thr"


def _paper(rec: dict) -> tuple[str, str, str]:
    if rec["protocol"]["target"] != "iphone" or rec["protocol"]["resolution"] != PAPER_IPHONE["resolution"]:
        return "—", "—", "—"
    return (f"{PAPER_IPHONE['unet_step_ms']:.0f}", f"~{PAPER_IPHONE['decoder_ms']:.0f}",
            f"{PAPER_IPHONE['end_to_end_s'] * 1e3:.0f} (4-8 steps: 1200-2300)")


def _sort_key(rec: dict):
    p = rec["protocol"]
    return (p["target"], rec["name"], p["resolution"], p["dtype"], p["steps"], p["unet_batch"],
            p.get("compute_unit") or "", bool(p.get("compile")))


def architecture_costs(rec: dict) -> dict:
    """{params, gflops} of an architecture record (GFLOPs at 1024 px, else at its reference resolution)."""
    ref = f"gflops_{rec['protocol'].get('resolution_px')}"
    return {"params": _number(rec, "params"), "gflops": _number(rec, "gflops_1024", ref, "gflops")}


def latency_row(rec: dict, architecture: dict[str, dict], decoders: dict[str, dict]) -> str:
    p, m = rec["protocol"], rec["details"]["model"]
    tiny = m.get("tiny")
    arch = architecture.get(m.get("variant") or "", {})
    dec = decoders.get(str(m.get("decoder", "")).removesuffix("-small"), {}) if not tiny else {}
    params = arch.get("params") if not tiny else (m.get("params") or {}).get("unet")
    gflops = f"{arch['gflops']:.0f}" if arch.get("gflops") and not tiny else "—"
    measured, estimate = _score(rec, "end_to_end_ms_median"), _score(rec, "end_to_end_estimate_ms")
    e2e_txt = (f"{measured:.0f}" if measured is not None else "—") + \
              (f" / {estimate:.0f}" if estimate is not None else "")
    p_unet, p_dec, p_e2e = _paper(rec)
    weights = "random" if str(m.get("weights", "")).startswith("random") else "trained"
    params_txt = f"{params / 1e6:.0f}" if params else "—"
    dec_txt = m.get("decoder", "—") + (f" ({dec['params'] / 1e6:.2f}M)" if dec.get("params") else "")
    return (f"| {p['target']} | {_where(rec)} | {m.get('name')} ({weights}) | {params_txt} | {gflops} | "
            f"{dec_txt} | {p['resolution']} | {p['dtype']} | {p['unet_batch']}{' cfg' if p['cfg'] else ''} | "
            f"{_ms(rec, 'text_encoders')} | {_ms(rec, 'unet_step')} | {_ms(rec, 'decoder')} | "
            f"{p['steps']} | {e2e_txt} | {p_unet} | {p_dec} | {p_e2e} |")


def export_row(rec: dict) -> str:
    p = rec["protocol"]
    rewrite, parity = _score(rec, "rewrite_psnr_db"), _score(rec, "parity_psnr_db")
    psnr = f"{rewrite:.0f}" if rewrite is not None else "—"
    gate = rec["details"]["parity"]["status"] + (f" {parity:.1f} dB" if parity is not None else "")
    return (f"| {p['component']} | {rec['name']} | {p['resolution']} | {p['batch']} | {p['precision']} | "
            f"{p['compression']} | {p['minimum_deployment_target']} | {_score(rec, 'params') / 1e6:.2f} | "
            f"{_score(rec, 'n_ops'):.0f} | {_score(rec, 'weight_bytes') / 2**20:.1f} | {_score(rec, 'trace_s'):.1f} | "
            f"{_score(rec, 'convert_s'):.1f} | {_score(rec, 'total_s'):.1f} | {psnr} | {gate} |")


def latency_table(records: list[dict], architecture: list[dict] = (), decoders: list[dict] = (),
                  exports: list[dict] = ()) -> str:
    """The markdown from records already read (each list holds envelope records of its kind)."""
    arch = {r["name"]: architecture_costs(r) for r in architecture}
    decs = {(r["name"] or r["details"].get("decoder")): {"params": _number(r, "params")} for r in decoders}
    lines = [*HEADER, *(latency_row(r, arch, decs) for r in sorted(records, key=_sort_key))]
    if exports:
        key = lambda e: (e["protocol"]["component"], e["name"], e["protocol"]["resolution"],  # noqa: E731
                         e["protocol"]["batch"], e["protocol"]["compression"])
        lines += [*EXPORT_HEADER, *(export_row(e) for e in sorted(exports, key=key))]
    return "\n".join(lines) + "\n"


def _read(folder: Path, kind: str) -> list[dict]:
    return list(read_records(folder, kind).values()) if folder.exists() else []


def render(results_root: Path) -> str:
    """``results/tables/latency.md`` from the records under ``results_root``."""
    root = Path(results_root)
    return latency_table(_read(root / "latency", "latency"), _read(root / "architecture", "architecture"),
                         _read(root / "decoders", "decoder"), _read(root / "coreml", "export"))
