"""The world's training mix (``TrainConfig.tag_weights``): parsed like every field, checked, reaching the dataset
the trainer reads, never letting a held-out prompt into training, and counted as uniform for configs written
before the field existed."""
from collections import Counter

import pytest

from snapgen.data.world import GENEVAL_TAGS, WorldConfig, make_prompt_set
from snapgen.training.config import apply_overrides
from snapgen.training.t2i import LEGACY_VALUES, TrainConfig, build_dataset, stored_recipe

MIX = "tag_weights=1,1,1.5,0.5,2,2"


def test_override_parses_and_reaches_the_training_stream():
    cfg = apply_overrides(TrainConfig(), [MIX])
    assert cfg.tag_weights == (1.0, 1.0, 1.5, 0.5, 2.0, 2.0)
    ds = build_dataset(cfg)
    w = [1, 1, 1.5, 0.5, 2, 2]
    assert list(ds.tag_p) == pytest.approx([x / sum(w) for x in w])
    tags = Counter(ds[i]["metadata"]["tag"] for i in range(3000))
    # 3000 draws: position (p = 0.25) is drawn clearly more often than colors (p = 0.0625)
    assert tags["position"] > 2.5 * tags["colors"]
    assert build_dataset(TrainConfig()).tag_p.tolist() == pytest.approx([1 / 6] * 6)


def test_reweighted_stream_never_emits_a_heldout_prompt():
    ds = build_dataset(apply_overrides(TrainConfig(), [MIX]))
    heldout = {m["prompt"] for m in make_prompt_set(10**6, seed=0, cfg=WorldConfig())}
    train = {ds.caption(i) for i in range(20_000)}
    assert not train & heldout


@pytest.mark.parametrize("bad, words", [
    ("tag_weights=1,1,1", "give 6 non-negative weights"),
    ("tag_weights=1,1,1,1,1,-1", "non-negative"),
    ("tag_weights=0,0,0,0,0,0", "not all zero"),
])
def test_bad_mix_is_an_error_naming_the_field(bad, words):
    with pytest.raises(ValueError, match="tag_weights") as e:
        apply_overrides(TrainConfig(), [bad])
    assert words in str(e.value) and ",".join(GENEVAL_TAGS) in str(e.value)


def test_mix_needs_the_world():
    with pytest.raises(ValueError, match="data=world"):
        apply_overrides(TrainConfig(), ["data=folder:/nowhere", MIX])
    assert apply_overrides(TrainConfig(), ["data=folder:/nowhere"]).tag_weights == (1.0,) * 6   # default is fine


def test_configs_written_before_the_field_count_as_uniform():
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "tag_weights"}
    assert stored_recipe(old)["tag_weights"] == LEGACY_VALUES["tag_weights"] == [1.0] * 6
    assert stored_recipe(old)["tag_weights"] == list(TrainConfig().to_dict()["tag_weights"])
