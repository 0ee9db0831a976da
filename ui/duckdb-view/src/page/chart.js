// The page's quick chart: a bar or line chart of one numeric column of a
// result against another column, drawn as inline SVG. Our own ~200 lines
// rather than a chart library: the page loads nothing from elsewhere, a
// vendored library would be tens of kilobytes for two chart types, and this
// one describes itself in text for screen readers (the result table stays
// the full text alternative).
//
// window.ViewChart = { columnKinds, points, render }.
'use strict';

(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  const NUMERIC = /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL|REAL)/;
  // Bars beyond this many are unreadable; a line holds more.
  const LIMITS = { bar: 200, line: 5000 };
  // The drawing is as wide as its box (so that text keeps its size on a
  // phone), within these bounds; always this high.
  const WIDTHS = { min: 300, max: 960 };
  const HEIGHT = 320;
  const MARGIN = { top: 16, right: 20, bottom: 72, left: 72 };

  const format = (n) => n.toLocaleString('en', { maximumFractionDigits: 2 });

  // A result value as a number (DuckDB's big integers and decimals arrive as
  // strings), or NaN.
  function toNumber(value) {
    if (typeof value === 'number') return value;
    if (typeof value === 'string' && /^\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*$/.test(value)) return Number(value);
    return NaN;
  }

  function label(value) {
    if (value === null) return 'NULL';
    return typeof value === 'string' ? value : JSON.stringify(value);
  }

  // Which columns can be a Y axis (numeric types).
  function columnKinds(columns) {
    return columns.map((c) => NUMERIC.test(c.type));
  }

  // The points to draw: x index -1 is the row number. Rows whose y is not a
  // number (NULL) are skipped and counted.
  function points(result, kind, xIndex, yIndex) {
    const limit = LIMITS[kind] || LIMITS.bar;
    const xNumeric = xIndex >= 0 && columnKinds(result.columns)[xIndex];
    const out = [];
    let skipped = 0;
    for (let r = 0; r < result.rows.length && out.length < limit; r++) {
      const row = result.rows[r];
      const y = toNumber(row[yIndex]);
      const xValue = xIndex < 0 ? r + 1 : row[xIndex];
      const x = xIndex < 0 ? r + 1 : (xNumeric ? toNumber(xValue) : NaN);
      if (!Number.isFinite(y) || (xNumeric && !Number.isFinite(x))) {
        skipped++;
        continue;
      }
      out.push({ label: label(xValue), x, y });
    }
    const numericX = xIndex < 0 || xNumeric;
    if (kind === 'line' && numericX) out.sort((a, b) => a.x - b.x);
    return { points: out, skipped, capped: result.rows.length > limit, limit, numericX };
  }

  // About `count` round tick values covering [lo, hi].
  function ticks(lo, hi, count) {
    if (lo === hi) { lo -= 1; hi += 1; }
    const raw = (hi - lo) / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
    const first = Math.floor(lo / step) * step;
    const out = [];
    for (let v = first; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    if (out[out.length - 1] < hi) out.push(Number((out[out.length - 1] + step).toPrecision(12)));
    return out;
  }

  function node(tag, attrs, text) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    if (text != null) n.textContent = text;
    return n;
  }

  function shorten(text, max) {
    return text.length > max ? text.slice(0, max - 1) + '…' : text;
  }

  // A sentence for screen readers (and the caption): what is drawn, the
  // range, and every point when there are few.
  function describe(kind, data, xName, yName) {
    const pts = data.points;
    const noun = kind === 'bar' ? 'bars' : 'points';
    let text = (kind === 'bar' ? 'Bar' : 'Line') + ' chart of ' + yName + ' by ' + xName + ', ' +
      pts.length.toLocaleString('en') + ' ' + (pts.length === 1 ? noun.slice(0, -1) : noun);
    if (data.capped) text += ' (the first ' + data.limit.toLocaleString('en') + ' rows)';
    if (data.skipped) text += ', ' + data.skipped + ' rows without a value left out';
    if (!pts.length) return text + '.';
    if (pts.length <= 20) {
      return text + ': ' + pts.map((p) => p.label + ' ' + format(p.y)).join(', ') + '.';
    }
    let min = pts[0];
    let max = pts[0];
    for (const p of pts) {
      if (p.y < min.y) min = p;
      if (p.y > max.y) max = p;
    }
    return text + '. Lowest ' + format(min.y) + ' at ' + min.label + ', highest ' + format(max.y) + ' at ' + max.label + '.';
  }

  // The chart as an <svg role="img"> with <title> and <desc>, drawn for a
  // box `boxWidth` pixels wide.
  function render(kind, data, xName, yName, idPrefix, boxWidth) {
    const WIDTH = Math.round(Math.max(WIDTHS.min, Math.min(WIDTHS.max, boxWidth || 720)));
    const pts = data.points;
    const description = describe(kind, data, xName, yName);
    const svg = node('svg', {
      viewBox: '0 0 ' + WIDTH + ' ' + HEIGHT, role: 'img', class: 'chart ' + kind,
      'aria-labelledby': idPrefix + '-title ' + idPrefix + '-desc', preserveAspectRatio: 'xMidYMid meet',
    });
    svg.append(node('title', { id: idPrefix + '-title' }, yName + ' by ' + xName));
    svg.append(node('desc', { id: idPrefix + '-desc' }, description));
    const plotW = WIDTH - MARGIN.left - MARGIN.right;
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    const ys = pts.map((p) => p.y);
    let lo = Math.min(0, ...ys);
    let hi = Math.max(0, ...ys);
    const yTicks = ticks(lo, hi, 5);
    lo = yTicks[0];
    hi = yTicks[yTicks.length - 1];
    const yAt = (v) => MARGIN.top + plotH - ((v - lo) / (hi - lo || 1)) * plotH;

    const axes = node('g', { class: 'axes', 'aria-hidden': 'true' });
    for (const t of yTicks) {
      axes.append(node('line', { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: yAt(t), y2: yAt(t), class: t === 0 ? 'zero' : 'grid' }));
      axes.append(node('text', { x: MARGIN.left - 6, y: yAt(t) + 4, 'text-anchor': 'end' }, format(t)));
    }
    axes.append(node('text', { x: 14, y: MARGIN.top + plotH / 2, transform: 'rotate(-90 14 ' + (MARGIN.top + plotH / 2) + ')', 'text-anchor': 'middle', class: 'axis-name' }, shorten(yName, 40)));
    axes.append(node('text', { x: MARGIN.left + plotW / 2, y: HEIGHT - 6, 'text-anchor': 'middle', class: 'axis-name' }, shorten(xName, 60)));
    svg.append(axes);

    const marks = node('g', { class: 'marks' });
    const xLabel = (x, text) => axes.append(node('text', {
      x, y: MARGIN.top + plotH + 14, 'text-anchor': 'end', transform: 'rotate(-35 ' + x + ' ' + (MARGIN.top + plotH + 14) + ')',
    }, shorten(text, 14)));
    const every = Math.max(1, Math.ceil(pts.length / Math.max(4, Math.floor(plotW / 56))));

    if (kind === 'bar' || !data.numericX) {
      const band = plotW / Math.max(1, pts.length);
      pts.forEach((p, i) => {
        const cx = MARGIN.left + band * (i + 0.5);
        if (kind === 'bar') {
          const top = yAt(Math.max(0, p.y));
          const bar = node('rect', { x: cx - band * 0.4, width: Math.max(1, band * 0.8), y: top, height: Math.max(0.5, Math.abs(yAt(p.y) - yAt(0))), class: 'bar' });
          bar.append(node('title', {}, p.label + ': ' + format(p.y)));
          marks.append(bar);
        }
        p.cx = cx;
        if (i % every === 0) xLabel(cx, p.label);
      });
    } else {
      const xTicks = ticks(pts[0].x, pts[pts.length - 1].x, Math.max(3, Math.min(8, Math.floor(plotW / 80))));
      const xlo = xTicks[0];
      const xhi = xTicks[xTicks.length - 1];
      const xAt = (v) => MARGIN.left + ((v - xlo) / (xhi - xlo || 1)) * plotW;
      for (const t of xTicks) xLabel(xAt(t), format(t));
      pts.forEach((p) => { p.cx = xAt(p.x); });
    }
    if (kind === 'line' && pts.length) {
      const d = pts.map((p, i) => (i ? 'L' : 'M') + p.cx.toFixed(1) + ' ' + yAt(p.y).toFixed(1)).join(' ');
      marks.append(node('path', { d, class: 'line' }));
      if (pts.length <= 100) {
        for (const p of pts) {
          const dot = node('circle', { cx: p.cx, cy: yAt(p.y), r: 3, class: 'dot' });
          dot.append(node('title', {}, p.label + ': ' + format(p.y)));
          marks.append(dot);
        }
      }
    }
    svg.append(marks);
    return { svg, description };
  }

  window.ViewChart = { columnKinds, points, render };
})();
