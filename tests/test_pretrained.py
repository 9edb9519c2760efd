"""One save/load convention (snapgen.models.pretrained.PretrainedMixin = diffusers ModelMixin + ConfigMixin) for every
snapgen model: round trips, older layouts, errors; checkpoints written before the move load with the same tensors."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from snapgen.io import MissingWeightsError, sha256_json
from snapgen.models.decoder import TinyDecoder, TinyDecoderConfig
from snapgen.models.pretrained import CorruptCheckpointError, PretrainedMixin
from snapgen.models.unet import SnapGenUNet
from snapgen.text import TextEncoderStack

SHIPPED = Path(__file__).resolve().parents[1] / "snapgen/weights/world-tiny/pipeline"


@dataclass(frozen=True)
class ToyConfig:
    width: int = 4                  # features of the toy's one linear layer

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ToyConfig":
        return cls(d["width"])

    @property
    def hash(self) -> str:
        return sha256_json(self.to_dict())[:12]


class Toy(PretrainedMixin, nn.Module):
    config_class = ToyConfig
    legacy_names = (("toy_config.json", "toy.safetensors"),)

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.lin = nn.Linear(config.width, config.width)


def test_every_model_uses_the_one_convention():
    from diffusers import ConfigMixin, ModelMixin

    for cls in (SnapGenUNet, TinyDecoder, TextEncoderStack):
        assert issubclass(cls, PretrainedMixin) and issubclass(cls, ModelMixin) and issubclass(cls, ConfigMixin)
        assert cls.from_pretrained.__func__ is PretrainedMixin.from_pretrained.__func__
    for cls in (SnapGenUNet, TinyDecoder):      # the text stack saves only its trainable projections
        assert cls.save_pretrained is PretrainedMixin.save_pretrained


def test_round_trip_layout_and_errors(tmp_path):
    torch.manual_seed(0)
    toy = Toy(ToyConfig(3))
    toy.save_pretrained(tmp_path / "toy")
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors",
                                                                     "weights.sha256.json"]
    cfg = json.loads((tmp_path / "toy" / "config.json").read_text())
    assert {k: v for k, v in cfg.items() if k != "_diffusers_version"} == \
        {"_class_name": "Toy", "width": 3, "config_hash": ToyConfig(3).hash}
    again = Toy.from_pretrained(tmp_path / "toy")
    assert torch.equal(again.lin.weight, toy.lin.weight) and again.config == toy.config
    with pytest.raises(ValueError, match="another variant"):
        Toy.from_pretrained(tmp_path / "toy", expected=ToyConfig(4))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        Toy.from_pretrained(tmp_path / "nope")
    w = tmp_path / "toy" / "diffusion_pytorch_model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="corrupted"):
        Toy.from_pretrained(tmp_path / "toy")
    w.write_bytes(data)
    (tmp_path / "toy" / "config.json").write_text(json.dumps({**cfg, "width": 5}))
    with pytest.raises(CorruptCheckpointError, match="do not match"):
        Toy.from_pretrained(tmp_path / "toy")
    (tmp_path / "toy" / "config.json").write_text("{}")
    with pytest.raises(CorruptCheckpointError, match="unreadable"):
        Toy.from_pretrained(tmp_path / "toy")


class ToyOwnSave(Toy):
    """A model with its own save_pretrained (as the text stack has): the mixin still adds the manifest."""

    def save_pretrained(self, directory, **kwargs):
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / "toy.safetensors"))
        (d / "toy_config.json").write_text(json.dumps(self.config.to_dict()))
        return d


def test_every_save_writes_a_sha256_manifest_and_every_load_checks_it(tmp_path):
    from snapgen.io import CorruptWeightsError, sha256_file

    assert TextEncoderStack.save_pretrained._writes_manifest and ToyOwnSave.save_pretrained._writes_manifest
    for cls in (Toy, ToyOwnSave):
        d = cls(ToyConfig(3)).save_pretrained(tmp_path / cls.__name__)
        manifest = json.loads((d / "weights.sha256.json").read_text())
        weights = next(d.glob("*.safetensors"))
        assert manifest == {"algorithm": "sha256", "files": {weights.name: sha256_file(weights)}}
        assert cls.from_pretrained(d).config == ToyConfig(3)
        (d / "extra.safetensors").write_bytes(weights.read_bytes())         # a file the save did not write
        with pytest.raises(CorruptWeightsError, match="extra.safetensors.*not listed"):
            cls.from_pretrained(d)


def test_older_layout_still_loads(tmp_path):
    toy = Toy(ToyConfig(2))
    toy.save_pretrained(tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    (old / "toy_config.json").write_text(json.dumps(toy.config.to_dict()))     # no _class_name / hash then
    shutil.copy(tmp_path / "new" / "diffusion_pytorch_model.safetensors", old / "toy.safetensors")
    assert torch.equal(Toy.from_pretrained(old).lin.bias, toy.lin.bias)


def test_shipped_unet_loads_and_resaves_the_same_tensors_and_config(tmp_path):
    from safetensors.torch import load_file

    unet = SnapGenUNet.from_pretrained(SHIPPED / "unet")
    unet.save_pretrained(tmp_path / "unet")
    old, new = (load_file(str(d / "unet" / "diffusion_pytorch_model.safetensors")) for d in (SHIPPED, tmp_path))
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    old_cfg, new_cfg = ({k: v for k, v in json.loads((d / "unet" / "config.json").read_text()).items()
                         if k not in ("_diffusers_version", "_name_or_path")} for d in (SHIPPED, tmp_path))
    assert new_cfg == old_cfg


# text/text_config.json of the world-tiny shipped before the 2-process recipe (written before the mixin)
OLD_TEXT_CONFIG = {"context_dim": 384, "pooled_dim": 384,
                   "encoders": [{"drop_prob": 0.1, "max_tokens": 16, "name": "minilm", "path": None}]}


def test_text_stack_of_the_older_layout_loads_and_saves_the_new_one(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "text_config.json").write_text(json.dumps(OLD_TEXT_CONFIG, indent=2))
    stack = TextEncoderStack.from_pretrained(tmp_path / "old")
    stack.save_pretrained(tmp_path / "text")
    assert sorted(p.name for p in (tmp_path / "text").iterdir()) == ["config.json"]   # MiniLM: nothing trainable
    assert TextEncoderStack.from_pretrained(tmp_path / "text").config == stack.config


def test_tiny_decoder_config_file_is_unchanged(tmp_path):
    cfg = TinyDecoderConfig(stage_channels=(16, 8), blocks_per_stage=(1, 1))
    TinyDecoder(cfg).save_pretrained(tmp_path / "dec")
    saved = json.loads((tmp_path / "dec" / "config.json").read_text())
    assert saved.pop("_diffusers_version")
    assert saved == {"_class_name": "TinyDecoder", **json.loads(json.dumps(cfg.to_dict())),
                     "config_hash": sha256_json(cfg.to_dict())[:12]}
    assert TinyDecoder.from_pretrained(tmp_path / "dec").config == cfg
