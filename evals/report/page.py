"""Report sections (``evals.report.collect``) and comparisons (``evals.report.flips``) -> one self-contained
``index.html``: inline CSS, inline SVG for detections, plain JavaScript for filters and sorting; every image is a
relative path inside the report folder and nothing is fetched from anywhere else."""
from __future__ import annotations

import json
import math
from html import escape

CSS_COLORS = {"red": "#e53935", "orange": "#fb8c00", "yellow": "#fdd835", "green": "#43a047", "blue": "#1e88e5",
              "purple": "#8e24aa", "pink": "#f06292", "brown": "#6d4c41", "black": "#000", "white": "#fff"}

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header,section{padding:12px 20px}header{background:#263238;color:#fff}header a{color:#9cf}
h2{margin:18px 0 6px;border-bottom:2px solid #ccc}h3{margin:12px 0 4px}
table{border-collapse:collapse;background:#fff;margin:4px 0}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
.pos{color:#2e7d32}.neg{color:#c62828}
pre{background:#fff;border:1px solid #ddd;padding:6px;max-height:320px;overflow:auto;font-size:12px}
#filters{position:sticky;top:0;background:#eceff1;padding:8px 20px;border-bottom:1px solid #ccc;z-index:2}
#filters label{margin-right:14px}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ccc;border-radius:6px;width:230px;padding:6px;font-size:12px}
.card.correct{border-top:5px solid #43a047}.card.incorrect{border-top:5px solid #e53935}
.card.failed{border-top:5px solid #999}.dpg.card{width:330px}.imgwrap{position:relative;width:100%}
.imgwrap img{width:100%;display:block;image-rendering:pixelated}
.imgwrap svg{position:absolute;left:0;top:0;width:100%;height:100%}
.noimg{background:#eee;padding:30px;text-align:center}.verdict{font-weight:bold;margin-top:4px}
.prompt{font-style:italic}.meta{color:#666}.reason{white-space:pre-wrap;color:#c62828}
.dets{margin:2px 0;padding-left:16px}
.sw{display:inline-block;width:10px;height:10px;border:1px solid #555;margin-right:3px}
.q td{font-size:11px;padding:1px 4px}.q .no{background:#ffebee}.q .zeroed{background:#fff3e0}
.pair{display:flex;gap:6px;background:#fff;border:1px solid #ccc;border-radius:6px;padding:6px;width:480px}
.flip{width:230px;font-size:12px}.figs{display:flex;gap:20px}
.figs img{width:256px;image-rendering:pixelated}
"""

SCRIPT = """
function apply(){
  const rec=document.getElementById('f-record').value, grp=document.getElementById('f-group').value,
        ver=document.getElementById('f-verdict').value, sort=document.getElementById('f-sort').value;
  let shown=0;
  document.querySelectorAll('.cards').forEach(box=>{
    const cards=[...box.querySelectorAll(':scope > .card')];
    cards.sort((a,b)=>{
      const ai=+a.dataset.order, bi=+b.dataset.order;
      if(sort==='group') return a.dataset.group.localeCompare(b.dataset.group)||ai-bi;
      if(sort==='score-asc') return (+a.dataset.score)-(+b.dataset.score)||ai-bi;
      if(sort==='score-desc') return (+b.dataset.score)-(+a.dataset.score)||ai-bi;
      return ai-bi;});
    cards.forEach(c=>{
      const ok=(rec==='all'||c.dataset.record===rec)&&(grp==='all'||c.dataset.group===grp)&&
               (ver==='all'||c.dataset.verdict===ver);
      c.style.display=ok?'':'none'; if(ok) shown++; box.appendChild(c);});
  });
  document.getElementById('n-shown').textContent=shown;
}
document.querySelectorAll('#filters select').forEach(s=>s.addEventListener('change',apply));
apply();
"""


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return escape(str(v))


def scores_table(scores: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(k)}</td><td>{_fmt(s['value'])}</td>"
        f"<td>{'[' + _fmt(s['ci95'][0]) + ', ' + _fmt(s['ci95'][1]) + ']' if s.get('ci95') else '—'}</td>"
        f"<td>{_fmt(s.get('n'))}</td><td>{escape(str(s.get('unit', '')))}</td>"
        f"<td>{ {True: 'higher', False: 'lower', None: '—'}[s.get('higher_is_better')] }</td></tr>"
        for k, s in sorted(scores.items()))
    return ("<table class='scores'><tr><th>metric</th><th>value</th><th>95% CI</th><th>n</th><th>unit</th>"
            f"<th>better</th></tr>{rows}</table>")


def _boxes_svg(card: dict) -> str:
    if not card["boxes"] or not card.get("image_size"):
        return ""
    w, h = card["image_size"]
    fs = max(w, h) * 0.055
    parts = []
    for b in card["boxes"]:
        x0, y0, x1, y1 = b["box"]
        label = f"{b['class']} {b['score']:.2f}" + (f" {b['color']}" if b.get("color") else "")
        parts.append(f"<rect x='{x0}' y='{y0}' width='{x1 - x0}' height='{y1 - y0}' fill='none' stroke='#000' "
                     f"stroke-width='{fs * 0.35:.3f}'/><rect x='{x0}' y='{y0}' width='{x1 - x0}' height='{y1 - y0}' "
                     f"fill='none' stroke='#00e5ff' stroke-width='{fs * 0.15:.3f}'/>"
                     f"<text x='{x1 if x0 > w / 2 else x0}' y='{max(y0 - fs * 0.2, fs)}' font-size='{fs:.3f}' "
                     f"text-anchor='{'end' if x0 > w / 2 else 'start'}' fill='#00e5ff' stroke='#000' "
                     f"stroke-width='{fs * 0.08:.3f}' paint-order='stroke'>{escape(label)}</text>")
    return f"<svg viewBox='0 0 {w} {h}' preserveAspectRatio='none'>{''.join(parts)}</svg>"


def _tiles_svg(card: dict) -> str:
    tiles = card.get("tile_scores") or []
    side = int(math.isqrt(len(tiles)))
    if not tiles or side * side != len(tiles):
        return ""
    texts = "".join(f"<text x='{i % side + 0.04}' y='{i // side + 0.12}' font-size='0.09' fill='#fff' stroke='#000' "
                    f"stroke-width='0.02' paint-order='stroke'>tile {i}: {t:.2f}</text>" for i, t in enumerate(tiles))
    return f"<svg viewBox='0 0 {side} {side}' preserveAspectRatio='none'>{texts}</svg>"


def _questions(card: dict) -> str:
    if not card.get("questions"):
        return ""
    head = "".join(f"<th>t{i}</th>" for i in range(len(card.get("tile_scores") or [])))
    body = []
    for q in card["questions"]:
        cells = []
        for ans, raw, sc in zip(q.get("answers", []), q.get("raw", []), q.get("scores", [])):
            cls = "zeroed" if raw and not sc else ("no" if not sc else "")
            title = "dependency-zeroed" if cls == "zeroed" else ""
            cells.append(f"<td class='{cls}' title='{title}'>{escape(str(ans))} ({sc:g})</td>")
        dep = ",".join(str(d) for d in q.get("dependency", []))
        body.append(f"<tr><td title='{escape(q.get('tuple', ''))}'>{q.get('qid')}. {escape(q.get('question', ''))} "
                    f"<span class='meta'>[dep {dep}]</span></td>{''.join(cells)}</tr>")
    return f"<table class='q'><tr><th>question</th>{head}</tr>{''.join(body)}</table>"


def _detections(card: dict, thr: str, dets: str) -> str:
    if card["sample"] is None:
        return ""
    if not card.get("detections_recorded"):
        return "<div class='meta'>detections not recorded (a record written before rows kept them)</div>"
    return f"<div class='meta'>detections{thr}:</div><ul class='dets'>{dets}</ul>"


def card_html(card: dict, order: int, cls: str = "card") -> str:
    img = (f"<div class='imgwrap'><img src='{escape(card['image'])}' alt=''>{_boxes_svg(card)}{_tiles_svg(card)}</div>"
           if card["image"] else "<div class='noimg'>image missing</div>")
    mark = {"correct": "✓ correct", "incorrect": "✗ incorrect", "failed": "failed"}[card["verdict"]]
    score = "" if card["score"] is None or card["sample"] is not None else f" · score {card['score']:.3f}"
    where = (f"{escape(card['group'])} · prompt {card['index']} · sample {card['sample']}"
             if card["sample"] is not None else f"{escape(card['group'])} · item {escape(str(card.get('item_id')))}")
    dets = "".join(f"<li><span class='sw' style='background:{CSS_COLORS.get(b.get('color'), '#ccc')}'></span>"
                   f"{escape(b['class'])} {b['score']:.2f} {escape(b.get('color') or '')}</li>" for b in card["boxes"])
    thr = f" (kept: score &gt; {card['threshold']:g})" if card.get("threshold") is not None else ""
    dpg = " dpg" if card.get("questions") is not None else ""
    ident = card["id"] if cls == "card" else f"{cls}-{card['id']}"          # flip copies get ids of their own
    return (f"<div class='{cls} {card['verdict']}{dpg}' id='{escape(ident)}' data-record='{escape(card['record'])}' "
            f"data-group='{escape(card['group'])}' data-verdict='{card['verdict']}' data-order='{order}' "
            f"data-score='{card['score'] if card['score'] is not None else -1}'>{img}"
            f"<div class='verdict'>{mark}{score}</div><div class='prompt'>{escape(card['prompt'])}</div>"
            f"<div class='meta'>{where}</div>"
            + _detections(card, thr, dets)
            + (f"<div class='reason'>{escape(card['reason'])}</div>" if card["reason"] else "")
            + f"{_questions(card)}</div>")


def _figure(src: str | None, alt: str) -> str:
    return f"<img src='{escape(src)}' alt='{alt}'>" if src else "<div class='noimg'>no images found</div>"


def section_html(s: dict) -> str:
    env = s["environment"]
    meta = (f"{escape(s['kind'])} · {escape(str(s['benchmark'] or ''))} · created {escape(s['created'])} · "
            f"commit {escape(str(env.get('git_commit', ''))[:12])} · file {escape(s['path'])}")
    fid = ""
    if s["fid"]:
        figs = "".join(f"<figure>{_figure(s['fid'][k], k)}<figcaption>{k} (first {s['fid'][k + '_n']})</figcaption>"
                       "</figure>" for k in ("generated", "reference"))
        fid = f"<h3>samples</h3><div class='figs'>{figs}</div>"
    cards = "".join(card_html(c, i) for i, c in enumerate(s["cards"]))
    return (f"<section id='rec-{escape(s['slug'])}'><h2>{escape(s['name'])}</h2><div class='meta'>{meta}</div>"
            f"<h3>scores</h3>{scores_table(s['scores'])}{fid}"
            f"<details><summary>protocol card</summary><pre>{escape(json.dumps(s['protocol'], indent=1))}</pre>"
            f"</details>"
            + (f"<h3>samples ({len(s['cards'])})</h3><div class='cards'>{cards}</div>" if s["cards"] else "")
            + "</section>")


def comparison_html(c: dict) -> str:
    warn = ""
    if c["mismatch"]:
        items = "".join(f"<li>{escape(k)}: {escape(repr(x))} ≠ {escape(repr(y))}</li>" for k, x, y in c["mismatch"])
        warn = f"<p class='neg'>protocol mismatch: these scores are not comparable</p><ul>{items}</ul>"
    rows = []
    for r in c["rows"]:
        p = r["paired"]
        cls = "" if r["better"] == "—" else ("pos" if r["better"] == "B" else "neg")
        ptxt = (f"{p['diff']:+.4f} [{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}] ({p['n_units']} units)" if p else "—")
        rows.append(f"<tr><td>{escape(r['metric'])}</td><td>{_fmt(r['a'])}</td><td>{_fmt(r['b'])}</td>"
                    f"<td class='{cls}'>{r['diff']:+.4g}</td><td>{r['better']}</td><td>{ptxt}</td></tr>")
    table = ("<table><tr><th>metric</th><th>A</th><th>B</th><th>B−A</th><th>better</th><th>paired B−A [95% CI]</th>"
             f"</tr>{''.join(rows)}</table>")
    if c["same_samples"]:
        pairs = "".join(f"<div class='pair'>{card_html(f['a'], i, 'flip')}{card_html(f['b'], i, 'flip')}</div>"
                        for i, f in enumerate(c["flips"]))
        flips = (f"<h3>{len(c['flips'])} sample(s) whose verdict flipped (left A, right B)</h3>"
                 f"<div class='flips cards-flat' style='display:flex;flex-wrap:wrap;gap:10px'>{pairs}</div>")
    else:
        flips = "<p>different prompts or seeds: no per-sample pairing</p>"
    return (f"<div class='comparison'><h3>{escape(c['benchmark'])}: A = {escape(c['a_name'])}, "
            f"B = {escape(c['b_name'])}</h3>{warn}{table}{flips}</div>")


def _options(values: list[str]) -> str:
    return "<option value='all'>all</option>" + "".join(f"<option value='{escape(v)}'>{escape(v)}</option>"
                                                         for v in values)


def render(sections: list[dict], comparisons: list[dict], title: str) -> str:
    groups = sorted({c["group"] for s in sections for c in s["cards"]})
    nav = " · ".join(f"<a href='#rec-{escape(s['slug'])}'>{escape(s['name'])}</a>" for s in sections)
    n_cards = sum(len(s["cards"]) for s in sections)
    filters = (f"<div id='filters'><label>record <select id='f-record'>{_options([s['slug'] for s in sections])}"
               f"</select></label><label>task / mode <select id='f-group'>{_options(groups)}</select></label>"
               "<label>verdict <select id='f-verdict'><option value='all'>all</option><option value='correct'>"
               "correct</option><option value='incorrect'>incorrect</option><option value='failed'>failed</option>"
               "</select></label><label>sort <select id='f-sort'><option value='index'>prompt order</option>"
               "<option value='group'>task / mode</option><option value='score-asc'>score ascending</option>"
               "<option value='score-desc'>score descending</option></select></label>"
               f"<span id='n-shown'>?</span> of {n_cards} samples shown</div>")
    compare = ("<section id='compare'><h2>compare</h2>" + "".join(comparison_html(c) for c in comparisons)
               + "</section>") if comparisons else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><header><h1>{escape(title)}</h1><div>{nav}"
            + (" · <a href='#compare'>compare</a>" if comparisons else "") + f"</div></header>{filters}"
            + compare + "".join(section_html(s) for s in sections)
            + f"<script>{SCRIPT}</script></body></html>\n")
