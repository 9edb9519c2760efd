"""The latency table: ``results/latency/**.json`` (+ architecture and decoder records) -> Markdown.

A pure function of the records (sorted, fixed formatting: re-running gives identical bytes). Rows are
joined with the architecture table's variant records (params, GFLOPs at 1024 px) and the decoder
table's records (decoder params); where the target is ``iphone`` the paper's iPhone 16 Pro Max numbers
(U-Net 274 ms/step, decoder ~119 ms at 1024 px, 1.4 s end to end) are printed beside ours.
Core ML export records (``results/coreml``) get a second table.

    python -m ablations.latency_table            # writes results/tables/latency.md
"""
from __future__ import annotations

import json
from pathlib import Path

from ablations.tables.architecture import write
from snapgen.latency import PAPER_IPHONE

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _ms(st: dict | None, spec: str = ".1f") -> str:
    if not st:
        return "—"
    return f"{st['median_ms']:{spec}} ({st['p90_ms']:{spec}})"


def _where(rec: dict) -> str:
    env, s = rec["environment"], rec["settings"]
    if rec["target"] == "iphone":
        return f"{env.get('device', 'iPhone')} {env.get('device_os', '')}, {s.get('compute_unit')}".strip()
    if rec["target"] == "mac":
        return f"{env.get('cpu', 'Mac')}, {s.get('compute_unit')}"
    if rec["target"] == "cuda":
        return env.get("gpu", "cuda")
    return f"{env.get('cpu', 'cpu')}, {s.get('threads') or env.get('threads')} thr"


def _paper(rec: dict) -> tuple[str, str, str]:
    if rec["target"] != "iphone" or rec["settings"]["resolution"] != PAPER_IPHONE["resolution"]:
        return "—", "—", "—"
    return (f"{PAPER_IPHONE['unet_step_ms']:.0f}", f"~{PAPER_IPHONE['decoder_ms']:.0f}",
            f"{PAPER_IPHONE['end_to_end_s'] * 1e3:.0f} (4-8 steps: 1200-2300)")


def _sort_key(rec: dict):
    s = rec["settings"]
    return (rec["target"], rec["model"].get("name", ""), s["resolution"], s["dtype"], s["steps"], s["unet_batch"],
            s.get("compute_unit") or "", bool(s.get("compile")))


def latency_rows(records: list[dict], architecture: dict[str, dict], decoders: dict[str, dict]) -> list[str]:
    rows = []
    for rec in sorted(records, key=_sort_key):
        s, m, c = rec["settings"], rec["model"], rec["components"]
        arch = architecture.get(m.get("variant") or "", {})
        dec_name = str(m.get("decoder", "")).removesuffix("-small")
        dec = decoders.get(dec_name, {}) if not m.get("tiny") else {}
        params = arch.get("params") if not m.get("tiny") else (m.get("params") or {}).get("unet")
        gflops = f"{arch['gflops']:.0f}" if arch.get("gflops") and not m.get("tiny") else "—"
        e2e = rec["end_to_end"]
        measured = e2e.get("measured")
        e2e_txt = (f"{measured['median_ms']:.0f}" if measured else "—") + \
                  (f" / {e2e['estimate_ms']:.0f}" if e2e.get("estimate_ms") is not None else "")
        p_unet, p_dec, p_e2e = _paper(rec)
        weights = "random" if str(m.get("weights", "")).startswith("random") else "trained"
        params_txt = f"{params / 1e6:.0f}" if params else "—"
        dec_txt = m.get("decoder", "—") + (f" ({dec['params'] / 1e6:.2f}M)" if dec.get("params") else "")
        rows.append(f"| {rec['target']} | {_where(rec)} | {m.get('name')} ({weights}) | {params_txt} | {gflops} | "
                    f"{dec_txt} | {s['resolution']} | {s['dtype']} | {s['unet_batch']}{' cfg' if s['cfg'] else ''} | "
                    f"{_ms(c.get('text_encoders'))} | {_ms(c.get('unet_step'))} | {_ms(c.get('decoder'))} | "
                    f"{s['steps']} | {e2e_txt} | {p_unet} | {p_dec} | {p_e2e} |")
    return rows


def latency_table(records: list[dict], architecture: list[dict] = (), decoders: list[dict] = (),
                  exports: list[dict] = ()) -> str:
    arch = {r["variant"]: r for r in architecture if r.get("kind") == "architecture"}
    decs = {r["decoder"]: r for r in decoders if r.get("kind") == "decoder_cost"}
    lines = [
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
        *latency_rows(records, arch, decs),
    ]
    if exports:
        lines += ["", "## Core ML exports (results/coreml)", "",
                  "| component | model | res (px) | batch | precision | compression | target | params (M) | ops | "
                  "weights (MiB) | trace s | convert s | total s | rewrite PSNR dB | parity |",
                  "|---|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for e in sorted(exports, key=lambda e: (e["component"], e["name"], e["settings"]["resolution"],
                                                e["settings"]["batch"], e["settings"]["compression"])):
            st, t, par = e["settings"], e["timings"], e["parity"]
            psnr = f"{e['rewrite_psnr_db']:.0f}" if e.get("rewrite_psnr_db") is not None else "—"
            gate = par["status"] + (f" {par['psnr_db']:.1f} dB" if par.get("psnr_db") is not None else "")
            lines.append(f"| {e['component']} | {e['name']} | {st['resolution']} | {st['batch']} | {st['precision']} | "
                         f"{st['compression']} | {e['minimum_deployment_target']} | {e['params'] / 1e6:.2f} | "
                         f"{e['n_ops']} | {e['weight_bytes'] / 2**20:.1f} | {t['trace_s']:.1f} | {t['convert_s']:.1f} | "
                         f"{t['total_s']:.1f} | {psnr} | {gate} |")
    return "\n".join(lines) + "\n"


def _load(folder: Path, pattern: str = "*.json") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(pattern))] if folder.exists() else []


def write_latency_table(results: Path = RESULTS) -> Path:
    records = [r for r in _load(results / "latency", "*/*.json") if r.get("kind") == "latency"]
    text = latency_table(records, _load(results / "architecture"), _load(results / "decoders"),
                         [e for e in _load(results / "coreml") if e.get("kind") == "coreml_export"])
    return write(results / "tables" / "latency.md", text)


if __name__ == "__main__":
    print(write_latency_table())
