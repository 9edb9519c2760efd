"""Every record under results/ must come from committed code; every quality (ablation) record must still match
its twin; every table regenerates from records; every figure redraws from records."""
import pytest

from ablations.tables import TABLES, dirty_records, renderer
from ablations.twins import LADDERS, TWINS, ladder_of
from snapgen.io import atomic_write_text
from snapgen.paths import results_root
from snapgen.records import read_records

MIN_SEEDS = 3


def _all_records() -> dict[str, dict]:
    root = results_root()
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("tables", "figures")):
        out.update(read_records(folder))
    return out


def test_no_record_comes_from_uncommitted_code():
    bad = dirty_records(_all_records())
    assert not bad, (f"{len(bad)} record(s) were made from uncommitted code or an unknown commit: {bad[:10]}; "
                     "commit the code and rerun the command that wrote them")


def _ablation_records() -> dict[str, dict]:
    out = {}
    for ladder in LADDERS:
        folder = results_root() / "ablation" / ladder
        if folder.is_dir():
            out.update(read_records(folder, "ablation"))
    return out


def test_quality_records_match_their_twins():
    stale = []
    for path, r in _ablation_records().items():
        p = r["protocol"]
        twin = TWINS.get(p["twin"])                                   # an unknown twin raises with close matches
        if p["config_hash"] != twin.config.hash or ladder_of(twin.paper["full_size"]) != p["ladder"]:
            stale.append(path)
    assert not stale, f"quality records whose twin config changed since they were made: {stale}; rerun their jobs"


def test_every_twin_has_quality_records(request):
    seeds: dict[str, set] = {}
    for r in _ablation_records().values():
        seeds.setdefault(r["protocol"]["twin"], set()).add(r["protocol"]["seed"])
    missing = [t.name for t in TWINS if len(seeds.get(t.name, ())) < MIN_SEEDS]
    if missing and not request.config.getoption("--require-quality"):
        pytest.skip(f"{len(missing)} twin(s) with < {MIN_SEEDS} seeds of quality records (run "
                    f"`python -m ablations ladder`; --require-quality makes this fail): {', '.join(missing)}")
    assert not missing, f"twins with < {MIN_SEEDS} seeds of quality records: {missing} (`python -m ablations ladder`)"


@pytest.mark.parametrize("name", list(TABLES))
def test_table_regenerates_from_records(name):
    root = results_root()
    md = renderer(name)(root)
    assert md == renderer(name)(root)                              # a pure function of the records
    atomic_write_text(root / "tables" / f"{name}.md", md)


def test_figures_redraw_from_records():
    from paper_figures import learning_curve
    from paper_figures.ladder import write_figures
    from snapgen.records import read_record

    root = results_root()
    written = write_figures(root)
    for rec in sorted((root / "world").glob("learning_curve-*.json")):
        written.append(learning_curve.plot(read_record(rec), root / "figures" / f"{rec.stem}.png"))
    assert written and all(p.stat().st_size > 0 for p in written)
