"""Regenerates the decoder table (results/decoders/*.json -> results/tables/decoders.md) and the figure
(paper_figures.decoders -> results/figures/decoders.png).

Reads the decoder records (measured by ``python -m ablations.decoders``), checks the numbers and that the
table/figure are pure functions of the records.
"""
from __future__ import annotations

import copy

import pytest

from ablations.decoders import DecoderTableSettings, regenerate
from ablations.tables.decoders import ROWS, decoder_table, ratios, render
from snapgen.models.decoder import SD3_VAE_DECODER_PARAMS
from snapgen.paths import results_root
from snapgen.records import value


@pytest.fixture(scope="module")
def regenerated():
    from paper_figures.decoders import write_figure

    out = regenerate(results_root(), DecoderTableSettings(), measure=False)
    return {**out, "figure": write_figure(results_root())}


def _rows(table: str) -> dict[str, list[str]]:
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("decoder",) and not cells[0].startswith("---"):
            out[cells[0]] = cells
    return out


def test_params_and_flops(regenerated):
    recs = regenerated["records"]
    assert value(recs["sd3_vae"], "params") == SD3_VAE_DECODER_PARAMS == 49_545_475
    assert value(recs["sdxl_vae"], "params") == 49_490_199          # decoder 49,490,179 + post_quant_conv 20
    assert abs(value(recs["tiny"], "params") - 1.38e6) / 1.38e6 < 0.10
    assert recs["sd3_vae"]["details"]["flops"] == pytest.approx(10.47e12, rel=2e-3)
    assert value(recs["sd3_vae"], "gflops_1024") == recs["sd3_vae"]["details"]["flops"] / 1e9
    assert recs["tiny"]["details"]["flops"] < recs["sd3_vae"]["details"]["flops"] / 50
    assert ratios(recs)["tiny"]["params_x"] == pytest.approx(35.7, abs=0.1)  # paper: ~36x
    for r in recs.values():  # every record carries its settings and environment
        p, lat = r["protocol"], r["scores"][f"cpu_ms_median_{r['protocol']['latency_resolution_px']}px"]
        assert r["kind"] == "decoder" and p["latency_latent"] * 8 == p["latency_resolution_px"]
        assert r["environment"]["versions"]["torch"] and lat["n"] == p["latency_repeats"]
        assert lat["higher_is_better"] is False and r["scores"]["gflops_1024"]["higher_is_better"] is False


def test_table_lists_every_row_with_ratios_from_records(regenerated):
    recs = regenerated["records"]
    text = regenerated["table"].read_text()
    rows = _rows(text)
    assert set(rows) == {recs[n]["details"]["label"] for n in ROWS}
    rx = ratios(recs)
    for n in ROWS:
        cells = rows[recs[n]["details"]["label"]]
        assert cells[1] == f"{int(value(recs[n], 'params')):,}"
        assert float(cells[2]) == pytest.approx(rx[n]["params_x"], abs=0.05)
        assert float(cells[6]) == pytest.approx(rx[n]["speed_x"], abs=0.05)
    assert text == render(results_root())  # byte-identical re-run from the same records


def test_ratios_follow_the_records_not_a_fresh_measurement(regenerated):
    recs = copy.deepcopy(regenerated["records"])
    key = f"cpu_ms_median_{recs['tiny']['protocol']['latency_resolution_px']}px"
    recs["tiny"]["scores"][key]["value"] = value(recs["sd3_vae"], key) / 123.0
    row = _rows(decoder_table(recs))[recs["tiny"]["details"]["label"]]
    assert row[6] == "123.0"


def test_figure_is_deterministic(regenerated):
    from paper_figures.decoders import decoders_figure

    png = regenerated["figure"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert decoders_figure(regenerated["records"]) == png
