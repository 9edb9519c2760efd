"""Regenerates the decoder table (results/decoders/*.json -> results/tables/decoders.md + figure).

Measures three decoders once per session (~40 s on one shared CPU thread), then checks the numbers
and that the table/figure are pure functions of the records.
"""
from __future__ import annotations

import copy

import pytest

from ablations.decoders import (RESULTS, ROWS, DecoderTableSettings, decoder_table, draw_figure, load_records,
                                ratios, regenerate)
from snapgen.models.decoder import SD3_VAE_DECODER_PARAMS


@pytest.fixture(scope="module")
def regenerated():
    return regenerate(RESULTS, DecoderTableSettings(), measure=True)


def _rows(table: str) -> dict[str, list[str]]:
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("decoder",) and not cells[0].startswith("---"):
            out[cells[0]] = cells
    return out


def test_params_and_flops(regenerated):
    recs = regenerated["records"]
    assert recs["sd3_vae"]["params"] == SD3_VAE_DECODER_PARAMS == 49_545_475
    assert recs["sdxl_vae"]["params"] == 49_490_199          # decoder 49,490,179 + post_quant_conv 20
    assert abs(recs["tiny"]["params"] - 1.38e6) / 1.38e6 < 0.10
    assert recs["sd3_vae"]["flops_1024"] == pytest.approx(10.47e12, rel=2e-3)
    assert recs["tiny"]["flops_1024"] < recs["sd3_vae"]["flops_1024"] / 50
    assert ratios(recs)["tiny"]["params_x"] == pytest.approx(35.7, abs=0.1)  # paper: ~36x
    for r in recs.values():  # every record carries its settings and environment
        assert r["settings"]["latency_latent"] * 8 == r["latency_resolution_px"]
        assert r["env"]["versions"]["torch"] and r["latency_cpu"]["n"] == r["settings"]["latency_repeats"]


def test_table_lists_every_row_with_ratios_from_records(regenerated):
    recs = regenerated["records"]
    text = regenerated["table"].read_text()
    rows = _rows(text)
    assert set(rows) == {recs[n]["label"] for n in ROWS}
    rx = ratios(recs)
    for n in ROWS:
        cells = rows[recs[n]["label"]]
        assert cells[1] == f"{recs[n]['params']:,}"
        assert float(cells[2]) == pytest.approx(rx[n]["params_x"], abs=0.05)
        assert float(cells[6]) == pytest.approx(rx[n]["speed_x"], abs=0.05)
    assert text == decoder_table(load_records(RESULTS))  # byte-identical re-run from the same records


def test_ratios_follow_the_records_not_a_fresh_measurement(regenerated):
    recs = copy.deepcopy(regenerated["records"])
    recs["tiny"]["latency_cpu"]["median_ms"] = recs["sd3_vae"]["latency_cpu"]["median_ms"] / 123.0
    row = _rows(decoder_table(recs))[recs["tiny"]["label"]]
    assert row[6] == "123.0"


def test_figure_is_deterministic(regenerated, tmp_path):
    png = regenerated["figure"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    again = draw_figure(regenerated["records"], tmp_path / "d.png").read_bytes()
    assert again == png
