"""Core ML export of the SnapGen U-Net and decoders, with a parity gate, for Mac/iPhone latency.

Format: an fp16 **ML program** (``.mlpackage``), ``minimum_deployment_target=ct.target.iOS17``
(iOS 17 / macOS 14: the oldest target whose ML programs take fp16 compute and the ``coremltools
.optimize`` weight compression used here), fixed shapes (latent side, batch, context length).
Route: ``torch.jit.trace`` -> ``coremltools.convert`` (the TorchScript frontend; torch.export is
not needed: the traced graph converts once the two rewrites below are applied).

Export rewrites (done by module replacement here; the model files are not touched):
  * **RoPE tables as constants.** ``rope_2d`` builds its cos/sin tables with ``arange``/``outer``
    at run time; coremltools converts ``outer`` to a matmul of an int32 ``arange`` and fails
    ("x as int32 and y as fp32"). The latent size is fixed at export, so :class:`ExportAttention`
    precomputes the tables per feature-map size and the trace stores them as constants.
  * **Explicit attention** (``attention="matmul"``, default): ``softmax(q k^T / sqrt(d)) v`` written
    as two matmuls; multi-query attention folds the query heads into the sequence axis
    (``(N, 1, h*L, d) @ (N, 1, d, S)``) instead of materialising h copies of K and V.
    ``attention="sdpa"`` keeps ``F.scaled_dot_product_attention`` (coremltools lowers it itself).
    Apple's split-einsum layout for the Neural Engine (ml-stable-diffusion) is not implemented.
:func:`rewrite_for_export` replaces every ``snapgen.models.layers.Attention`` in place; the
rewritten PyTorch module is checked against the original (``rewrite_psnr_db`` in the record).

Parity gate (as apple/ml-stable-diffusion): PSNR of the Core ML output against the PyTorch fp32
output, peak = max |reference|, must reach 35 dB. Core ML predictions run only on macOS; on Linux
the package, its op list (from the ML program spec) and its weight size are checked and parity is
recorded as skipped with the reason.

This module converts and inspects; it writes packages, never records: ``export_unet``/``export_decoder`` return
the export's description and the caller (``python -m evals.latency.export``, ``evals.latency.coreml``) writes it
as a record.
"""
from __future__ import annotations

import math
import platform
import resource
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snapgen.io import sha256_file
from snapgen.models import layers as L

DEPLOYMENT_TARGET = "iOS17"                   # ct.target.iOS17 (iOS 17 / macOS 14)
PARITY_MIN_PSNR_DB = 35.0                     # apple/ml-stable-diffusion's gate
COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")
COMPRESSIONS = ("none", "palettize4", "palettize6", "palettize8", "int8")
WEIGHT_FILE = Path("Data/com.apple.CoreML/weights/weight.bin")


class CoreMLPredictionUnavailable(RuntimeError):
    """Core ML predictions were asked for on a machine that cannot run them (anything but macOS)."""


@dataclass(frozen=True)
class ExportSettings:
    resolution: int = 1024                    # output pixels; latent side = resolution / 8
    batch: int = 1                            # fixed batch of the package
    # PAPER-UNKNOWN: CFG batch on device. Chose batch 1 because the headline (4 steps x 274 ms + 119 ms
    # ~ 1.2-1.4 s) leaves no room for a doubled CFG batch: step-distilled models sample without CFG.
    context_tokens: int = 333                 # text tokens (77 CLIP + 256 Gemma), fixed in the package
    precision: Literal["float16", "float32"] = "float16"  # compute precision of the ML program
    deployment_target: str = DEPLOYMENT_TARGET  # ct.target.<name>
    attention: Literal["matmul", "sdpa"] = "matmul"      # attention kernel after the rewrite (see module doc)
    compression: str = "none"                 # none | palettize4/6/8 (LUT) | int8 (linear symmetric)
    palettize_mode: str = "kmeans"            # OpPalettizerConfig mode (kmeans | uniform)
    seed: int = 0                             # example inputs and random weights

    @property
    def latent(self) -> int:
        return self.resolution // 8


# ------------------------------------------------------------------------------------------------
# Export-friendly attention (module replacement)


class ExportAttention(nn.Module):
    """Same maths as ``layers.Attention`` with constant RoPE tables and an explicit attention kernel."""

    def __init__(self, attn: L.Attention, rope_sizes: list[tuple[int, int]], kernel: str = "matmul"):
        super().__init__()
        self.attn, self.kernel = attn, kernel
        self.tables: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        if attn.rope:
            w = attn.to_q.weight
            for h, wd in rope_sizes:  # computed eagerly now, so a trace sees constants
                self.tables[(h, wd)] = L.rope_2d(h, wd, attn.head_dim, attn.rope_theta, w.device, w.dtype)

    def _rope(self, hw) -> tuple[torch.Tensor, torch.Tensor]:
        key = (int(hw[0]), int(hw[1]))
        if key not in self.tables:
            raise ValueError(f"no RoPE table for a {key} feature map; export sizes: {sorted(self.tables)}")
        return self.tables[key]

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, hw=None) -> torch.Tensor:
        a = self.attn
        n, length, _ = x.shape                                                        # (N, L, C)
        src = x if context is None else context
        q = a.to_q(x).view(n, length, a.heads, a.head_dim).transpose(1, 2)           # (N, h, L, d)
        k = a.to_k(src).view(n, src.shape[1], a.kv_heads, a.head_dim).transpose(1, 2)  # (N, hk, S, d)
        v = a.to_v(src).view(n, src.shape[1], a.kv_heads, a.head_dim).transpose(1, 2)
        q, k = a.q_norm(q), a.k_norm(k)
        if a.rope and context is None:
            cos, sin = self._rope(hw)
            q, k = L.apply_rope(q, cos, sin), L.apply_rope(k, cos, sin)
        if self.kernel == "sdpa":
            rep = a.heads // a.kv_heads
            if rep > 1:
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            out = F.scaled_dot_product_attention(q, k, v)                             # (N, h, L, d)
        else:
            qg = q.reshape(n, a.kv_heads, -1, a.head_dim) * a.head_dim ** -0.5        # (N, hk, rep*L, d)
            w = torch.matmul(qg, k.transpose(-1, -2)).softmax(dim=-1)                 # (N, hk, rep*L, S)
            out = torch.matmul(w, v).reshape(n, a.heads, length, a.head_dim)         # (N, h, L, d)
        return a.to_out(out.transpose(1, 2).reshape(n, length, -1))


def rewrite_for_export(model: nn.Module, latent: int, kernel: str = "matmul") -> int:
    """Replace every ``layers.Attention`` in ``model`` (in place) by :class:`ExportAttention`.

    RoPE tables are prepared for square maps ``latent >> i`` (every U-Net stage). Returns the count.
    """
    if kernel not in ("matmul", "sdpa"):
        raise ValueError(f"attention kernel {kernel!r}: expected 'matmul' or 'sdpa'")
    sizes = [(latent >> i, latent >> i) for i in range(8) if latent >> i]
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, L.Attention):
                setattr(module, name, ExportAttention(child, sizes, kernel))
                count += 1
    return count


@torch.no_grad()
def reinit_zero_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> int:
    """Give zero-initialised tensors (output layers of a fresh model) small random values.

    A fresh SnapGen U-Net outputs exactly 0 (zero-init output conv), which would make the parity
    gate meaningless; random-weight exports call this first. Returns the number of tensors changed.
    """
    g = torch.Generator().manual_seed(seed)
    changed = 0
    for p in model.parameters():
        if p.numel() > 1 and not p.any():
            p.copy_(torch.randn(p.shape, generator=g) * std)
            changed += 1
    return changed


# ------------------------------------------------------------------------------------------------
# Wrappers with flat tensor signatures (what a trace and Core ML need)


class UNetForExport(nn.Module):
    """``(latent, timestep, context, pooled) -> velocity`` (text) or ``(latent, timestep, class_labels)``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, latent, timestep, *cond):
        if self.unet.config.cond == "class":
            return self.unet(latent, timestep, class_labels=cond[0])
        return self.unet(latent, timestep, context=cond[0], pooled=cond[1])


def unet_inputs(config, s: ExportSettings) -> dict[str, torch.Tensor]:
    """Named example inputs of the U-Net package (fp32; labels int32)."""
    g = torch.Generator().manual_seed(s.seed)
    n, z = s.batch, s.latent
    out = {"latent": torch.randn(n, config.in_channels, z, z, generator=g),      # (N, C, h, w)
           "timestep": torch.full((n,), 0.5)}                                     # (N,) t in [0, 1]
    if config.cond == "class":
        out["class_labels"] = torch.zeros(n, dtype=torch.int32)
    else:
        out["context"] = torch.randn(n, s.context_tokens, config.context_dim, generator=g)  # (N, L, D)
        out["pooled"] = torch.randn(n, config.pooled_dim, generator=g)                     # (N, P)
    return out


def decoder_inputs(latent_channels: int, s: ExportSettings) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(s.seed)
    return {"latent": torch.randn(s.batch, latent_channels, s.latent, s.latent, generator=g)}


def decoder_latent_channels(decoder: nn.Module) -> int:
    cfg = getattr(decoder, "cfg", None)
    return cfg.latent_channels if cfg is not None else decoder.latent_channels


# ------------------------------------------------------------------------------------------------
# Conversion, compression, inspection


def _ct():
    warnings.filterwarnings("ignore", message=".*(not been tested|is not supported).*")
    import coremltools as ct
    return ct


def can_predict() -> bool:
    """Core ML predictions need macOS (coremltools' native runtime is built only there)."""
    return platform.system() == "Darwin"


def convert(module: nn.Module, inputs: dict[str, torch.Tensor], output: str, s: ExportSettings):
    """Trace ``module`` on ``inputs`` and convert to an ML program; returns (mlmodel, timings)."""
    ct = _ct()
    module.eval()
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, tuple(inputs.values()), check_trace=False)
    t1 = time.perf_counter()
    ct_inputs = [ct.TensorType(name=k, shape=tuple(v.shape), dtype=np.int32 if not v.is_floating_point() else np.float32)
                 for k, v in inputs.items()]
    precision = ct.precision.FLOAT16 if s.precision == "float16" else ct.precision.FLOAT32
    mlmodel = ct.convert(traced, inputs=ct_inputs, outputs=[ct.TensorType(name=output)], convert_to="mlprogram",
                         minimum_deployment_target=getattr(ct.target, s.deployment_target),
                         compute_precision=precision, skip_model_load=not can_predict())
    t2 = time.perf_counter()
    return mlmodel, {"trace_s": t1 - t0, "convert_s": t2 - t1}


def compress(mlmodel, mode: str, palettize_mode: str = "kmeans"):
    """Weight compression through ``coremltools.optimize.coreml`` (LUT palettization or int8)."""
    if mode == "none":
        return mlmodel
    from coremltools.optimize import coreml as cto

    if mode.startswith("palettize"):
        op = cto.OpPalettizerConfig(mode=palettize_mode, nbits=int(mode.removeprefix("palettize")))
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    if mode == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    raise ValueError(f"compression {mode!r}: expected one of {COMPRESSIONS}")


def _count_ops(block, counts: dict[str, int]) -> None:
    for op in block.operations:
        counts[op.type] = counts.get(op.type, 0) + 1
        for inner in op.blocks:
            _count_ops(inner, counts)


def package_summary(path: str | Path) -> dict[str, Any]:
    """Op counts (from the ML program spec), weight and package sizes, I/O shapes of a saved package."""
    ct = _ct()
    path = Path(path)
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    counts: dict[str, int] = {}
    for fn in spec.mlProgram.functions.values():
        _count_ops(fn.block_specializations[fn.opset], counts)

    def io(features):
        return {f.name: {"shape": list(f.type.multiArrayType.shape),
                         "dtype": ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(
                             f.type.multiArrayType.dataType)} for f in features}

    weights = path / WEIGHT_FILE
    return {"spec_version": spec.specificationVersion, "op_counts": dict(sorted(counts.items())),
            "n_ops": sum(counts.values()), "weight_bytes": weights.stat().st_size if weights.exists() else 0,
            "package_bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
            "weight_sha256": sha256_file(weights) if weights.exists() else None,
            "inputs": io(spec.description.input), "outputs": io(spec.description.output)}


def psnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR with peak = max |reference| (apple/ml-stable-diffusion's convention); capped at 200 dB."""
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    rmse = math.sqrt(float(np.mean((reference - test) ** 2)))
    peak = float(np.abs(reference).max())
    if rmse == 0.0:
        return 200.0
    return min(200.0, 20.0 * math.log10((peak + 1e-5) / (rmse + 1e-10)))


def parity(mlmodel, inputs: dict[str, torch.Tensor], reference: torch.Tensor, output: str,
           compute_unit: str = "CPU_ONLY") -> dict[str, Any]:
    """The parity gate: Core ML vs PyTorch fp32 PSNR >= 35 dB, or 'skipped' with the reason."""
    if not can_predict():
        return {"status": "skipped", "min_psnr_db": PARITY_MIN_PSNR_DB, "psnr_db": None,
                "reason": f"Core ML predictions need macOS (this is {platform.system()}); export, saved package, "
                          "op list and weight size were checked instead"}
    feed = {k: v.numpy().astype(np.int32 if not v.is_floating_point() else np.float32) for k, v in inputs.items()}
    got = mlmodel.predict(feed)[output]
    value = psnr_db(reference.numpy(), got)
    return {"status": "pass" if value >= PARITY_MIN_PSNR_DB else "fail", "psnr_db": value,
            "min_psnr_db": PARITY_MIN_PSNR_DB, "compute_unit": compute_unit}


# ------------------------------------------------------------------------------------------------
# Whole exports


def export_module(module: nn.Module, inputs: dict[str, torch.Tensor], output: str, package: Path,
                  s: ExportSettings, rewrite_latent: int | None = None) -> dict[str, Any]:
    """Reference output -> rewrite -> trace/convert -> compress -> save -> inspect -> parity."""
    t_start = time.perf_counter()
    with torch.no_grad():
        reference = module(*inputs.values()).float()
    rewritten, rewrite_psnr = 0, None
    if rewrite_latent is not None:
        rewritten = rewrite_for_export(module, rewrite_latent, s.attention)
        with torch.no_grad():
            rewrite_psnr = psnr_db(reference.numpy(), module(*inputs.values()).float().numpy())
    mlmodel, timings = convert(module, inputs, output, s)
    t0 = time.perf_counter()
    mlmodel = compress(mlmodel, s.compression, s.palettize_mode)
    timings["compress_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    package.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(package))
    timings["save_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    return {"package": str(package), "attention_rewrites": rewritten, "rewrite_psnr_db": rewrite_psnr,
            "timings": timings, **package_summary(package), "parity": parity(mlmodel, inputs, reference, output),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def export_result(component: str, name: str, config: dict | None, weights: str, s: ExportSettings,
                  result: dict[str, Any], n_params: int) -> dict[str, Any]:
    """What an export returns: the package's description, settings and timings (the caller records it)."""
    return {"component": component, "name": name, "params": n_params, "config": config, "weights": weights,
            "format": "mlprogram", "minimum_deployment_target": s.deployment_target,
            "settings": {**asdict(s), "latent": s.latent}, **result}


def record_name(component: str, name: str, s: ExportSettings) -> str:
    comp = "" if s.compression == "none" else f"_{s.compression}"
    return f"{component}_{name}_{s.resolution}px_b{s.batch}_{s.precision}{comp}"


def export_unet(unet: nn.Module, name: str, out_dir: Path, s: ExportSettings, weights: str) -> dict[str, Any]:
    """Export a SnapGen U-Net (modified in place by the attention rewrite) -> :func:`export_result`."""
    n_params = sum(p.numel() for p in unet.parameters())
    inputs = unet_inputs(unet.config, s)
    stem = record_name("unet", name, s)
    result = export_module(UNetForExport(unet.float().eval()), inputs, "velocity", out_dir / f"{stem}.mlpackage",
                           s, rewrite_latent=s.latent)
    return export_result("unet", name, unet.config.to_dict(), weights, s, result, n_params)


def export_decoder(decoder: nn.Module, name: str, out_dir: Path, s: ExportSettings, weights: str) -> dict[str, Any]:
    n_params = sum(p.numel() for p in decoder.parameters())
    inputs = decoder_inputs(decoder_latent_channels(decoder), s)
    stem = record_name("decoder", name, s)
    result = export_module(decoder.float().eval(), inputs, "image", out_dir / f"{stem}.mlpackage", s)
    cfg = decoder.cfg.to_dict() if hasattr(decoder, "cfg") else None
    return export_result("decoder", name, cfg, weights, s, result, n_params)


# ------------------------------------------------------------------------------------------------
# Mac: timed predictions per compute unit


def load_mlmodel(package: str | Path, compute_unit: str):
    """Load (and compile) a package for predictions on ``compute_unit``; macOS only."""
    if compute_unit not in COMPUTE_UNITS:
        raise ValueError(f"compute unit {compute_unit!r}: expected one of {COMPUTE_UNITS}")
    if not can_predict():
        raise CoreMLPredictionUnavailable(
            f"Core ML predictions need macOS; this machine runs {platform.system()}. Export here with "
            "`python -m evals.latency.export`, then time on a Mac (`--target mac`) or an iPhone (`--target iphone`).")
    ct = _ct()
    return ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, compute_unit))


def random_feed(summary_inputs: dict[str, dict], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs matching a package's input description (from :func:`package_summary`)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for name, d in summary_inputs.items():
        if d["dtype"] == "INT32":
            feed[name] = np.zeros(d["shape"], np.int32)
        else:
            feed[name] = rng.standard_normal(d["shape"]).astype(np.float16 if d["dtype"] == "FLOAT16" else np.float32)
    return feed
