"""Typed settings of a latency run: parsed once at the CLI edge (``evals.latency.cli``), then passed as frozen
objects to the measurement, the Core ML / iPhone paths and the record writer (no argparse namespace travels)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from snapgen.export.coreml import COMPRESSIONS, COMPUTE_UNITS  # noqa: F401  (re-exported for the CLI)

Target = Literal["cpu", "cuda", "mac", "iphone"]
TARGETS = ("cpu", "cuda", "mac", "iphone")
COMPONENTS = ("text_encoders", "unet_step", "decoder")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class LatencySettings:
    """What is timed and how: everything here goes into the record's ``protocol``."""
    target: Target = "cpu"           # where the numbers come from
    resolution: int = 1024           # output pixels (latent = resolution / 8)
    steps: int = 4                   # sampling steps in the end-to-end run (paper: 4-8 for 1.2-2.3 s)
    cfg: bool = False                # classifier-free guidance doubles the U-Net batch
    # PAPER-UNKNOWN: CFG in the on-device numbers. Chose off by default: 4 x 274 + 119 ms ~ 1.2 s matches the
    # headline only with one U-Net call of batch 1 per step (step-distilled models sample without CFG).
    batch: int = 1                   # images per prompt batch
    dtype: str = "float32"           # weights and activations (float32 | float16 | bfloat16)
    threads: int | None = None       # torch.set_num_threads (CPU); None = library default
    warmup: int = 2                  # untimed calls before timing (>= 1: the first is timed apart)
    repeats: int = 5                 # timed calls; median and p90 reported
    compile: bool = False            # torch.compile the U-Net and decoder
    channels_last: bool = False      # NHWC weights and 4-D inputs of the U-Net and decoder
    end_to_end: bool = True          # also time the whole pipeline as one call
    compute_unit: str | None = None  # Core ML compute unit (mac / iphone targets)

    @property
    def latent(self) -> int:
        return self.resolution // 8

    @property
    def unet_batch(self) -> int:
        return self.batch * (2 if self.cfg else 1)


@dataclass(frozen=True)
class ModelSource:
    """Which model is timed: a registered variant (random weights) or a trained pipeline directory."""
    variant: str | None = None       # registry name (exclusive with ckpt)
    ckpt: Path | None = None         # pipeline directory written by SnapGenPipeline.save_pretrained
    tiny: bool = False               # tiny widths of the variant (tests, dry runs)
    decoder: str = "auto"            # auto | tiny | sd3_vae | sdxl_vae | none
    text: str = "auto"               # auto | minilm | none (variant only; a checkpoint uses its own stack)

    def __post_init__(self):
        if (self.variant is None) == (self.ckpt is None):
            raise ValueError("a ModelSource names exactly one of variant and ckpt")


@dataclass(frozen=True)
class CoreMLSettings:
    """Mac and iPhone targets: packages to export or reuse, compute units, the device."""
    compute_units: tuple[str, ...] = COMPUTE_UNITS  # one record per unit
    packages: Path = Path("exports/coreml")         # where .mlpackage files are (re)made
    compress: str = "none"                          # one of COMPRESSIONS (snapgen.export.coreml)
    device_name: str | None = None                  # iphone: the connected device's name, as Xcode shows it
    team_id: str | None = None                      # iphone: Apple development team for code signing


@dataclass(frozen=True)
class LatencyJob:
    """One ``python -m evals.run latency`` invocation, resolved."""
    settings: LatencySettings
    source: ModelSource
    coreml: CoreMLSettings = field(default_factory=CoreMLSettings)
    out: Path | None = None          # records root; None = snapgen.paths.results_dir("latency")
