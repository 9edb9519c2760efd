"""What ``--ckpt`` accepts, behind one interface: ``generate(prompts, seeds) -> list[PIL]``.

* a snapgen pipeline directory (``pipeline.json``; e.g. ``runs/tiny-world/pipeline``),
* any diffusers pipeline directory on local disk (``model_index.json``: SDXL, SD3, ...),
* built-ins: ``world-tiny`` (the tiny SnapGen of the synthetic world: the shipped checkpoint in
  ``snapgen/weights/world-tiny``, verified by sha256; ``--retrain-world`` retrains it with the project's recipe),
  ``world-oracle`` (ground-truth renders of each prompt's scene: the benchmark's ceiling) and
  ``world-noise`` (uniform noise: its floor).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from snapgen.io import require_path, sha256_dir

DEFAULT_WORLD_RUN = Path(os.environ.get("SNAPGEN_WORLD_RUN", "runs/tiny-world"))
BUILTINS = ("world-tiny", "world-oracle", "world-noise")


class Generator:
    name: str
    domain: str = "generic"          # "world" selects the synthetic world's prompts and exact backends
    resolution: int
    threads: int | None = None       # torch CPU threads used to generate (recorded; part of the image cache key)
    inference = None                 # evals.inference.InferenceOptions of pipelines (None: not applicable)

    def set_inference(self, opts) -> None:
        """Precision / memory format / compile / split depthwise (``evals.inference``); only pipeline generators
        support them."""
        if not opts.is_default:
            raise ValueError(f"--dtype/--channels-last/--compile/--split-depthwise: {self.name} is not a pipeline, "
                             "they do not apply")

    def generate(self, prompts: list[str], seeds: list[int], metadata: list[dict] | None = None) -> list[Image.Image]:
        raise NotImplementedError

    def protocol(self) -> dict:
        return {"generator": self.name}


class SnapGenGenerator(Generator):
    def __init__(self, path: Path, steps: int | None, guidance: float | None, batch_size: int, device: str):
        from snapgen.pipeline import SnapGenPipeline

        self.path = path
        self.pipe = SnapGenPipeline.from_pretrained(path, device=device)
        self.steps, self.guidance, self.batch_size = steps or self.pipe.config.steps, guidance, batch_size
        self.guidance = self.pipe.config.guidance if guidance is None else guidance
        self.resolution = self.pipe.config.resolution
        self.domain = _domain(path)
        self.class_conditional = _cond(self.pipe) == "class"
        self.name = f"snapgen:{path}"

    @classmethod
    def from_pipeline(cls, pipe, steps: int | None = None, guidance: float | None = None, batch_size: int = 16):
        """An in-memory ``SnapGenPipeline`` (``evals.evaluate(..., generator=pipe)``); identified by the sha256
        of its weights and config instead of a folder."""
        self = cls.__new__(cls)
        self.path, self.pipe, self.batch_size = None, pipe, batch_size
        self.steps = steps or pipe.config.steps
        self.guidance = pipe.config.guidance if guidance is None else guidance
        self.resolution, self.domain = pipe.config.resolution, "generic"
        self.class_conditional = _cond(pipe) == "class"
        self.weights_sha256 = _module_sha256(pipe.unet)
        self.name = f"snapgen-in-memory-{self.weights_sha256[:12]}"
        return self

    def set_inference(self, opts) -> None:
        from evals.inference import apply

        apply(self.pipe, opts)
        self.inference = opts

    def _autocast(self):
        import contextlib

        return self.inference.autocast("cpu") if self.inference is not None else contextlib.nullcontext()

    def generate(self, prompts, seeds, metadata=None):
        with self._autocast():
            return self._generate(prompts, seeds, metadata)

    def _generate(self, prompts, seeds, metadata=None):
        if self.class_conditional:
            labels = [m.get("label") for m in metadata or [{}] * len(prompts)]
            if any(x is None for x in labels):
                raise ValueError(f"{self.name} is class-conditional: only benchmarks that give class labels can score "
                                 "it (`python -m evals.run fid --ref world`: FID-world-class); GenEval, DPG and CLIP "
                                 "score need a text-to-image checkpoint")
            return self.pipe.generate(None, seeds, class_labels=labels, steps=self.steps, guidance=self.guidance,
                                      batch_size=self.batch_size)
        return self.pipe.generate(prompts, seeds, steps=self.steps, guidance=self.guidance, batch_size=self.batch_size)

    def protocol(self):
        return {"generator": "snapgen", "checkpoint": str(self.path) if self.path else "in-memory",
                "checkpoint_sha256": checkpoint_sha256(self.path) if self.path else self.weights_sha256,
                "steps": self.steps, "guidance": self.guidance, "sampler": "euler (rectified flow)",
                "shift": self.pipe.pipeline_config.shift, "resolution": self.resolution, "negative_prompt": None,
                "threads": self.threads, **self.pipe.protocol(), **_inference_card(self.inference)}


def checkpoint_sha256(path: str | Path) -> str:
    """The content hash a record gives a checkpoint folder: every ``*.json`` and ``*.safetensors`` under it."""
    return sha256_dir(path, ("*.safetensors", "*.json"))


def _inference_card(opts) -> dict:
    """The options in the generator protocol (hence the image cache key) only when they differ from float32,
    contiguous, eager: records and image folders of default runs stay as they were before the options existed."""
    return {} if opts is None or opts.is_default else {"inference": opts.protocol()}


def _module_sha256(module: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _domain(path: Path) -> str:
    cfg = path.parent / "train_config.json"
    if cfg.exists() and json.loads(cfg.read_text()).get("data") in ("world", "world-class"):
        return "world"
    return "generic"


def _cond(pipe) -> str:
    """The U-Net's conditioning: "text" or "class"."""
    cfg = pipe.unet.config
    return getattr(cfg, "cond", None) or (cfg.get("cond") if hasattr(cfg, "get") else None) or "text"


class DiffusersGenerator(Generator):
    def __init__(self, path: Path, steps: int | None, guidance: float | None, resolution: int | None,
                 negative_prompt: str | None, batch_size: int, device: str):
        from diffusers import DiffusionPipeline

        self.path, self.device, self.batch_size = path, device, batch_size
        self.pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True).to(device)
        self.steps, self.guidance, self.negative_prompt = steps or 28, guidance, negative_prompt
        self.resolution = resolution or 1024
        self.name = f"diffusers:{path}"

    @classmethod
    def from_pipeline(cls, pipe, steps, guidance, resolution, negative_prompt, batch_size, device):
        """An in-memory diffusers pipeline (``evals.evaluate(..., generator=pipe)``), identified by its weights."""
        self = cls.__new__(cls)
        self.path, self.device, self.batch_size, self.pipe = None, device, batch_size, pipe
        self.steps, self.guidance, self.negative_prompt = steps or 28, guidance, negative_prompt
        self.resolution = resolution or 1024
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        self.weights_sha256 = _module_sha256(denoiser) if denoiser is not None else None
        self.name = f"diffusers-in-memory-{(self.weights_sha256 or 'unknown')[:12]}"
        return self

    def set_inference(self, opts) -> None:
        from evals.inference import apply

        apply(self.pipe, opts)
        self.inference = opts

    def generate(self, prompts, seeds, metadata=None):
        import contextlib

        with self.inference.autocast(self.device) if self.inference is not None else contextlib.nullcontext():
            return self._generate(prompts, seeds)

    def _generate(self, prompts, seeds):
        gens = [torch.Generator(self.device).manual_seed(s % 2**63) for s in seeds]
        kw = {"num_inference_steps": self.steps, "height": self.resolution, "width": self.resolution}
        if self.guidance is not None:
            kw["guidance_scale"] = self.guidance
        if self.negative_prompt:
            kw["negative_prompt"] = [self.negative_prompt] * len(prompts)
        return self.pipe(prompt=list(prompts), generator=gens, **kw).images

    def protocol(self):
        return {"generator": "diffusers", "class": type(self.pipe).__name__,
                "checkpoint": str(self.path) if self.path else "in-memory",
                "checkpoint_sha256": checkpoint_sha256(self.path) if self.path else self.weights_sha256,
                "steps": self.steps,
                "guidance": self.guidance, "resolution": self.resolution, "negative_prompt": self.negative_prompt,
                "sampler": type(self.pipe.scheduler).__name__, "threads": self.threads,
                **_inference_card(self.inference)}


class WorldOracle(Generator):
    """Renders a scene satisfying each prompt's metadata (needs ``metadata``): GenEval's ceiling."""

    domain, name = "world", "world-oracle"

    def __init__(self, resolution: int = 32):
        from snapgen.data.world import WorldConfig

        self.cfg, self.resolution = WorldConfig(resolution=resolution), resolution

    def generate(self, prompts, seeds, metadata=None):
        from snapgen.data.world import render, scene_from_metadata

        if metadata is None:
            raise ValueError("world-oracle renders from GenEval-style metadata; it cannot read free text")
        return [render(scene_from_metadata(m, np.random.default_rng(s % 2**32), self.cfg), self.cfg)[0]
                for m, s in zip(metadata, seeds)]

    def protocol(self):
        return {"generator": self.name, "resolution": self.resolution, "world_config": self.cfg.__dict__}


class WorldNoise(Generator):
    domain, name = "world", "world-noise"

    def __init__(self, resolution: int = 32):
        self.resolution = resolution

    def generate(self, prompts, seeds, metadata=None):
        return [Image.fromarray(np.random.default_rng(s % 2**32).integers(0, 256, (self.resolution, self.resolution, 3),
                                                                          dtype=np.uint8)) for s in seeds]

    def protocol(self):
        return {"generator": self.name, "resolution": self.resolution}


SHIPPED_WORLD = Path(__file__).resolve().parents[1] / "snapgen" / "weights" / "world-tiny"


def verify_manifest(folder: Path) -> dict:
    """Check every file listed in ``folder/manifest.json`` against its sha256; returns the manifest.
    A missing or changed file is a clear error naming it (never a silently different model)."""
    from snapgen.io import sha256_file

    mf = folder / "manifest.json"
    if not mf.is_file():
        raise FileNotFoundError(f"'{mf}' is missing: '{folder}' is not a shipped model folder (written by "
                                "`python -m evals.ship_world RUN_DIR`)")
    manifest = json.loads(mf.read_text())
    for rel, digest in manifest["files"].items():
        f = folder / rel
        if not f.is_file():
            raise FileNotFoundError(f"shipped model file '{f}' is missing; restore it with `git checkout -- {f}` "
                                    "or retrain with --retrain-world")
        if sha256_file(f) != digest:
            raise ValueError(f"shipped model file '{f}' does not match its sha256 in '{mf}' (corrupted or edited); "
                             "restore it with `git checkout` or retrain with --retrain-world")
    return manifest


def ensure_world_model(run_dir: Path = DEFAULT_WORLD_RUN, retrain: bool = False) -> Path:
    """The tiny world model's pipeline: the shipped, hash-verified checkpoint (default), or with ``retrain``
    the project's recipe retrained into ``run_dir`` (reused when it already finished with that recipe)."""
    if not retrain:
        verify_manifest(SHIPPED_WORLD)
        return SHIPPED_WORLD / "pipeline"
    from snapgen.train import TrainConfig

    pipe = run_dir / "pipeline"
    cfg = TrainConfig(out=str(run_dir))
    if (pipe / "pipeline.json").exists():
        from snapgen.training.t2i import stored_recipe

        # fields added to TrainConfig since the run was trained count with their LEGACY_VALUES; threads may differ
        saved = stored_recipe(json.loads((run_dir / "train_config.json").read_text()))
        want = json.loads(json.dumps(stored_recipe(cfg.to_dict())))
        if {**saved, "threads": None} != {**want, "threads": None}:
            raise ValueError(f"{run_dir} holds a world model trained with another recipe than the default; "
                             f"pass --ckpt {pipe} to use it, or delete {run_dir} to retrain with the default")
        return pipe
    print(f"world-tiny: retraining the default recipe into {run_dir} ({cfg.steps} steps x {cfg.processes} "
          f"processes, see {run_dir}/log.jsonl)")
    from snapgen.train import main as train_main

    rc = train_main(["--out", str(run_dir)])           # launches the recipe's processes (snapgen.train.main)
    if rc != 0:
        raise RuntimeError(f"`python -m snapgen.train --out {run_dir}` exited {rc}; rerun it to resume")
    return pipe


def load_generator(ckpt: str, steps: int | None = None, guidance: float | None = None, resolution: int | None = None,
                   negative_prompt: str | None = None, batch_size: int = 16, device: str = "cpu",
                   retrain_world: bool = False) -> Generator:
    if ckpt == "world-oracle":
        return WorldOracle(resolution or 32)
    if ckpt == "world-noise":
        return WorldNoise(resolution or 32)
    if ckpt == "world-tiny":
        pipe = ensure_world_model(retrain=retrain_world)
        gen = SnapGenGenerator(pipe, steps, guidance, batch_size, device)
        gen.name = "world-tiny" if not retrain_world else "world-tiny-retrained"
        gen.domain = "world"
        return gen
    path = require_path(ckpt, "--ckpt", "Pass a snapgen pipeline folder (pipeline.json), a diffusers pipeline "
                        f"folder (model_index.json), or one of {', '.join(BUILTINS)}.")
    if (path / "pipeline.json").exists():
        return SnapGenGenerator(path, steps, guidance, batch_size, device)
    if (path / "pipeline" / "pipeline.json").exists():
        return SnapGenGenerator(path / "pipeline", steps, guidance, batch_size, device)
    if (path / "model_index.json").exists():
        return DiffusersGenerator(path, steps, guidance, resolution, negative_prompt, batch_size, device)
    raise ValueError(f"--ckpt {path}: neither a snapgen pipeline (pipeline.json) nor a diffusers pipeline "
                     "(model_index.json) folder")
