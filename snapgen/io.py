"""Small I/O helpers shared by the whole suite: atomic writes, content hashes, local-path checks.

Every file the suite writes (checkpoints, images, records, caches) goes through an atomic write, so a
kill never leaves a half-written file that a rerun would mistake for finished work.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n")


def atomic_save_image(path: str | os.PathLike, image) -> Path:
    """Save a PIL image atomically; the format comes from the suffix (PNG for benchmarks)."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    image.save(buf, format=(path.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG"))
    return atomic_write_bytes(path, buf.getvalue())


def _json_default(obj: Any):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object in canonical form (sorted keys, no whitespace)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default).encode())


def sha256_dir(path: str | os.PathLike, patterns: tuple[str, ...] = ("*",)) -> str:
    """Content hash of every file under ``path`` matching ``patterns`` (relative names included)."""
    root = Path(path)
    h = hashlib.sha256()
    files = sorted({p for pat in patterns for p in root.rglob(pat) if p.is_file()})
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


class MissingWeightsError(FileNotFoundError):
    """A pretrained model file or folder the user must provide is absent.

    The message names the missing path, what it should contain, and how to get it; the suite never
    downloads weights at run time.
    """


def require_path(path: str | os.PathLike | None, what: str, how: str, must_contain: tuple[str, ...] = ()) -> Path:
    """Return ``Path(path)`` or raise :class:`MissingWeightsError` naming the problem and the fix."""
    if path is None or str(path) == "":
        raise MissingWeightsError(f"{what}: no path given. {how}")
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingWeightsError(f"{what}: '{p}' does not exist. {how}")
    for name in must_contain:
        if not (p / name).exists():
            inner = [d for d in sorted(p.iterdir()) if d.is_dir() and all((d / n).exists() for n in must_contain)] \
                if p.is_dir() else []            # e.g. a training run folder given for its pipeline/
            hint = f" Did you mean '{inner[0]}'?" if inner else ""
            raise MissingWeightsError(f"{what}: '{p / name}' is missing (expected inside '{p}').{hint} {how}")
    return p


# ------------------------------------------------------------------------------------------------
# Weights integrity: every weights file the project writes is listed with its sha256 in a manifest beside it,
# and checked on load, so a flipped byte is an error naming the file (safetensors alone only checks the header).
#
# One convention: ``weights.sha256.json`` = {"algorithm": "sha256", "files": {relative path: sha256}} in the folder
# that was written: a model folder (``PretrainedMixin.save_pretrained``: unet/, vae/, text_encoder/ of a pipeline)
# or a training checkpoint (``snapgen.training.checkpoint``, listing every module's files and optimizer.pt).

WEIGHTS_MANIFEST = "weights.sha256.json"
WEIGHTS_PATTERNS = ("*.safetensors", "*.pt", "*.pth", "*.bin")
SHIPPED_MANIFEST = "manifest.json"   # a shipped model folder's (``evals.ship_world``): also {"files": {rel: sha256}}


class CorruptCheckpointError(ValueError):
    """A checkpoint folder exists but its config or weights cannot be read or do not match."""


class CorruptWeightsError(CorruptCheckpointError):
    """A weights file does not match the sha256 its manifest recorded when it was written."""


def weights_files(folder: str | os.PathLike, patterns: tuple[str, ...] = WEIGHTS_PATTERNS) -> list[Path]:
    """The weights files under ``folder`` (recursively), sorted."""
    root = Path(folder)
    return sorted({p for pat in patterns for p in root.rglob(pat) if p.is_file()})


def write_weights_manifest(folder: str | os.PathLike, patterns: tuple[str, ...] = WEIGHTS_PATTERNS) -> dict:
    """List every weights file under ``folder`` (recursively) with its sha256 in ``folder/weights.sha256.json``.

    Call it after the weights are written (``save_pretrained``, a checkpoint); returns the manifest."""
    root = Path(folder)
    files = weights_files(root, patterns)
    manifest = {"algorithm": "sha256", "files": {p.relative_to(root).as_posix(): sha256_file(p) for p in files}}
    atomic_write_json(root / WEIGHTS_MANIFEST, manifest)
    return manifest


def _read_manifest(mf: Path, root: Path) -> dict:
    """``mf`` parsed; its ``files`` must map file names to sha256 strings."""
    try:
        manifest = json.loads(mf.read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise TypeError("'files' is not a mapping of file name -> sha256")
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptWeightsError(f"'{mf}' is not a valid weights manifest ({e}); rewrite or retrain '{root}'") from None
    return manifest


def verify_weights_manifest(folder: str | os.PathLike, required: bool = False) -> dict | None:
    """Check every file ``folder/weights.sha256.json`` lists; returns the manifest (None when absent and not
    ``required``: folders written before manifests existed). A missing or changed file raises naming it."""
    root = Path(folder)
    mf = root / WEIGHTS_MANIFEST
    if not mf.is_file():
        if required:
            raise CorruptWeightsError(f"'{mf}' is missing: '{root}' was not written completely by this project "
                                      "(every weights folder carries one); rewrite or retrain it")
        return None
    manifest = _read_manifest(mf, root)
    for rel, digest in manifest["files"].items():
        verify_file_sha256(root / rel, digest, mf)
    return manifest


def _is_sha256(v: str) -> bool:
    return len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def verify_weights_folder(folder: str | os.PathLike, levels: int = 2) -> Path | None:
    """Verify the weights files in ``folder`` (a model folder about to be loaded) against the nearest manifest that
    lists them; returns that manifest, or None when none does (a folder written before manifests existed).

    Looked up in order: ``folder/weights.sha256.json`` (which must then list every weights file in ``folder``);
    then, up to ``levels`` folders above, a ``weights.sha256.json`` (a training checkpoint's, for its ``ema/``,
    ``unet/`` ... written before model folders had their own) or a shipped model's ``manifest.json``
    (``snapgen/weights/world-tiny``) that lists the files under ``folder``. A changed, missing or unlisted file
    raises :class:`CorruptWeightsError` naming it and the fix."""
    root = Path(folder)
    present = weights_files(root)
    own = root / WEIGHTS_MANIFEST
    if own.is_file():
        files = _read_manifest(own, root)["files"]
        for rel, digest in files.items():
            verify_file_sha256(root / rel, digest, own)
        unlisted = [p for p in present if p.relative_to(root).as_posix() not in files]
        if unlisted:
            raise CorruptWeightsError(f"weights file '{unlisted[0]}' is not listed in '{own}': it was added or renamed "
                                      f"after '{root}' was written; remove it, or save the model again")
        return own
    if not present:
        return None
    above = root.resolve()
    for _ in range(levels):
        above = above.parent
        for name in (WEIGHTS_MANIFEST, SHIPPED_MANIFEST):
            mf = above / name
            if not mf.is_file():
                continue
            try:
                listed = json.loads(mf.read_text()).get("files")
            except (OSError, ValueError, AttributeError):
                continue                                  # not a manifest of ours (another tool's manifest.json)
            if not isinstance(listed, dict):
                continue
            rels = {p: (root.resolve() / p.relative_to(root)).relative_to(above).as_posix() for p in present}
            if not all(isinstance(listed.get(r), str) and _is_sha256(listed[r]) for r in rels.values()):
                continue
            for p, r in rels.items():
                verify_file_sha256(p, listed[r], mf)
            return mf
    return None


def verify_file_sha256(path: str | os.PathLike, expected: str, manifest: str | os.PathLike = "its manifest") -> None:
    """``path`` must exist and hash to ``expected``; else a clear error naming the file and the fix."""
    p = Path(path)
    if not p.is_file():
        raise CorruptWeightsError(f"weights file '{p}' listed in '{manifest}' is missing; restore it or retrain")
    actual = sha256_file(p)
    if actual != expected:
        raise CorruptWeightsError(f"weights file '{p}' is corrupted: its sha256 {actual[:12]}... does not match "
                                  f"{expected[:12]}... recorded in '{manifest}' when it was written; restore it "
                                  "from a copy or retrain")


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Fail before long work when ``path`` (a folder to be written) cannot be created or written."""
    p = Path(path).expanduser()
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"{what} '{p}': '{probe}' is a file, not a folder; choose another {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} '{p}': '{probe}' is not writable; choose a writable {what}")
    return p


def open_image_rgb(path: str | os.PathLike):
    """``PIL.Image.open(path).convert("RGB")``, fully decoded; a truncated or corrupt file is a ``ValueError`` that
    names it (PIL's own error does not), so a scorer never skips or half-reads an image silently."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as e:
        raise ValueError(f"'{path}' cannot be read as an image ({e}); regenerate or remove it") from None
