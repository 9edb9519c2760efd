"""Core ML packages for the mac and iphone targets: export (or reuse) them, and time them on a Mac.

Exporting writes the packages under ``CoreMLSettings.packages`` and one export record per package
(``evals.latency.records.write_export`` -> ``results/coreml/``).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ablations.models import tiny_config
from ablations.variants import REGISTRY
from evals.latency.components import RANDOM_WEIGHTS, SMALL_TINY_DECODER
from evals.latency.measure import Component, measure
from evals.latency.records import latency_record, write_export
from evals.latency.settings import LatencyJob
from snapgen.env import environment


def export_settings(job: LatencyJob):
    from snapgen.export.coreml import ExportSettings

    src, s = job.source, job.settings
    ctx = REGISTRY.get(src.variant).context_tokens if src.variant else 333
    return ExportSettings(resolution=s.resolution, batch=s.unet_batch, context_tokens=ctx, compression=job.coreml.compress)


def export_atomically(fn, model, name: str, folder: Path, es, weights: str) -> dict:
    """Export into a temp folder beside ``folder`` and rename the package into place: a kill mid-export never
    leaves a half-written ``.mlpackage`` that a later run would reuse."""
    import os
    import shutil
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".export-"))
    try:
        result = fn(model, name, tmp, es, weights)
        built = Path(result["package"])
        final = folder / built.name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(built, final)
        return {**result, "package": str(final)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_packages(job: LatencyJob) -> tuple[dict[str, Path], dict[str, Any]]:
    """Export (or reuse) the U-Net and decoder packages -> ({component: package}, model info)."""
    from snapgen.export import coreml as X
    from snapgen.models.decoder import TinyDecoder, tiny_decoder
    from snapgen.models.unet import SnapGenUNet

    src, es, folder = job.source, export_settings(job), job.coreml.packages
    if src.variant:
        variant = REGISTRY.get(src.variant)
        if variant.family != "snapgen":
            raise ValueError(f"--variant {variant.name}: Core ML export supports SnapGen U-Nets only")
        config = tiny_config(variant.config) if src.tiny else variant.config
        name, weights = variant.name + ("-tiny" if src.tiny else ""), RANDOM_WEIGHTS
        make_unet = lambda: SnapGenUNet(config)  # noqa: E731
        make_dec = lambda: tiny_decoder("snapgen", "cpu", **(SMALL_TINY_DECODER if src.tiny else {}))  # noqa: E731
    else:
        from snapgen.io import sha256_dir

        config = SnapGenUNet.from_pretrained(src.ckpt / "unet").config
        key = sha256_dir(src.ckpt, ("*.safetensors", "config.json"))[:12]   # packages keyed by content, not folder
        name, weights = f"{src.ckpt.name}-{key}", f"checkpoint {src.ckpt} (weights sha256 {key})"
        make_unet = lambda: SnapGenUNet.from_pretrained(src.ckpt / "unet")  # noqa: E731
        make_dec = lambda: TinyDecoder.from_pretrained(src.ckpt / "decoder")  # noqa: E731
    packages: dict[str, Path] = {}
    for comp, stem, make, fn in (("unet_step", X.record_name("unet", name, es), make_unet, X.export_unet),
                                 ("decoder", X.record_name("decoder", "tiny", es), make_dec, X.export_decoder)):
        path = folder / f"{stem}.mlpackage"
        if not path.exists():
            model = make()
            X.reinit_zero_weights(model) if src.variant else None
            write_export(export_atomically(fn, model, name if comp == "unet_step" else "tiny", folder, es, weights))
        packages[comp] = path
    model = {"name": name, "source": "variant" if src.variant else "ckpt", "variant": src.variant,
             "family": "snapgen", "config": config.to_dict(), "config_hash": config.hash, "weights": weights,
             "decoder": "tiny", "text": "not on device (paper: negligible)", "format": "Core ML mlprogram fp16",
             "minimum_deployment_target": es.deployment_target, "compression": es.compression,
             "packages": {k: str(v) for k, v in packages.items()}}
    return packages, model


def run_mac(job: LatencyJob) -> list[dict]:
    """Timed Core ML predictions per compute unit through coremltools (macOS only) -> one record per unit."""
    from snapgen.export.coreml import CoreMLPredictionUnavailable, can_predict, load_mlmodel, package_summary, random_feed

    if not can_predict():
        raise CoreMLPredictionUnavailable("--target mac: Core ML predictions need macOS (coremltools' runtime is "
                                          "macOS-only). Export here with `python -m evals.latency.export`, run this "
                                          "command on a Mac, or use --target iphone from a Mac with Xcode.")
    packages, model = ensure_packages(job)
    recs = []
    for unit in job.coreml.compute_units:
        s = replace(job.settings, compute_unit=unit)
        comps, load_s, models = [], {}, {}
        for comp, path in packages.items():
            t0 = time.perf_counter()
            models[comp] = load_mlmodel(path, unit)
            load_s[comp] = time.perf_counter() - t0
            feed = random_feed(package_summary(path)["inputs"])
            comps.append(Component(comp, lambda m=models[comp], f=feed: m.predict(f), {"package": str(path)}))
        unet_fn, dec_fn = comps[0].fn, comps[1].fn

        def e2e(unet_fn=unet_fn, dec_fn=dec_fn, steps=s.steps):
            for _ in range(steps):
                unet_fn()
            dec_fn()
        timing = measure(comps, s, "cpu", e2e)
        notes = ["load_s includes Core ML on-device compilation", "end to end = steps x U-Net + decoder (no text)"]
        recs.append(latency_record(s, model, timing, load_s, environment("cpu"), notes))
    return recs
