"""The cost side of a ladder rung, read from records: its full-size variant's parameters, FLOPs and CPU latency,
at the reference resolution and at the deployment resolution.

    reference     the architecture record (``python -m ablations table``): params, FLOPs at the variant's own
                  resolution, CPU U-Net latency and FLOPs at the timed latent (32 = 256 px)
    deployment    text-to-image runs at 1024 px (SPEC: 1024 px on an iPhone), where removing high-resolution
                  attention pays off; its CPU U-Net latency is a latency record of the same variant and config
                  (``python -m evals.run latency --variant V --resolution 1024 --steps 1 --no-e2e --text none
                  --decoder none --threads 1``), taken only when it was measured like the reference one (cpu,
                  float32, batch 1, no CFG, contiguous, eager, the same thread count)

The ladder table (``ablations.tables.ladder``) and the Pareto charts (``paper_figures.ladder``) both read costs
through ``rung_cost``, so they cannot disagree.
"""
from __future__ import annotations

from pathlib import Path

# the resolution each ladder is deployed at: the class-conditional ladder is the paper's ImageNet-256 setting
DEPLOY_PX: dict[str, int] = {"t2i": 1024, "in256": 256}


def _arch(root: Path, full_size: str) -> dict | None:
    from snapgen.records import read_record

    p = root / "architecture" / f"{full_size}.json"
    return read_record(p) if p.exists() else None


def _same_protocol(lat: dict, threads: int | None) -> bool:
    p = lat["protocol"]
    return (p.get("target") == "cpu" and p.get("dtype") == "float32" and p.get("batch") == 1 and not p.get("cfg")
            and not p.get("channels_last") and not p.get("compile") and p.get("threads") == threads)


def deployment_latency(root: Path, full_size: str, px: int, config_hash: str | None, threads: int | None) -> dict | None:
    """The newest latency record of ``full_size`` at ``px`` whose U-Net config and measuring protocol match the
    architecture record's: {"ms", "range", "path"} of the U-Net step (median, min..max), or None."""
    from snapgen.records import read_record

    folder = root / "latency" / "cpu"
    best = None
    for path in sorted(folder.glob(f"{full_size}_{px}px_float32_*steps_b1.json")) if folder.is_dir() else []:
        rec = read_record(path)
        model = rec["details"].get("model") or {}
        if rec["name"] != full_size or model.get("config_hash") != config_hash or not _same_protocol(rec, threads):
            continue
        if "unet_step_ms_median" not in rec["scores"]:
            continue
        if best is None or rec["created"] > best[0]["created"]:
            best = (rec, path)
    if best is None:
        return None
    rec, path = best
    unet = rec["details"]["components"]["unet_step"]
    return {"ms": rec["scores"]["unet_step_ms_median"]["value"], "range": (unet.get("min_ms"), unet.get("max_ms")),
            "path": str(path.relative_to(root))}


def rung_cost(root: Path, full_size: str, ladder: str) -> dict | None:
    """Costs of a rung's full-size variant, or None without an architecture record:

        params, gflops (at the variant's resolution) with gflops_px,
        ref_px, ref_gflops, ref_cpu_ms, ref_cpu_range      at the architecture record's timed resolution
        deploy_px, deploy_cpu_ms, deploy_cpu_range, deploy_source  at DEPLOY_PX[ladder] (None when not measured)
    """
    rec = _arch(root, full_size)
    if rec is None:
        return None
    s, d = rec["scores"], rec["details"]
    gkey = next((k for k in s if k.startswith("gflops_")), None)
    lat_protocol = rec["protocol"].get("latency") or {}
    stats = d.get("latency_cpu") or {}
    ref_px = lat_protocol.get("resolution_px")
    ref_ms = s.get(f"cpu_ms_median_{ref_px}px", {}).get("value") if ref_px else None
    out = {"params": s["params"]["value"], "gflops": s[gkey]["value"] if gkey else None,
           "gflops_px": int(gkey.split("_")[1]) if gkey else None,
           "ref_px": ref_px, "ref_cpu_ms": ref_ms, "ref_cpu_range": (stats.get("min_ms"), stats.get("max_ms")),
           "ref_gflops": stats["flops_at_latent"] / 1e9 if stats.get("flops_at_latent") else None,
           "deploy_px": DEPLOY_PX[ladder], "deploy_cpu_ms": None, "deploy_cpu_range": (None, None),
           "deploy_source": None}
    if ref_px == out["deploy_px"]:
        out.update(deploy_cpu_ms=ref_ms, deploy_cpu_range=out["ref_cpu_range"],
                   deploy_source=f"architecture/{full_size}.json")
    else:
        lat = deployment_latency(root, full_size, out["deploy_px"], d.get("config_hash"), lat_protocol.get("threads"))
        if lat:
            out.update(deploy_cpu_ms=lat["ms"], deploy_cpu_range=lat["range"], deploy_source=lat["path"])
    return out
