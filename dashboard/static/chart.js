/* A tiny SVG line chart for /api/v1/history points [[t_ns, avg, min, max], ...]:
   the average as a line, min..max as a light band, optional horizontal threshold lines.
   No library: a few hundred bytes of SVG per chart, drawn again on every update. */
(function () {
  'use strict';
  var NS = 'http://www.w3.org/2000/svg';
  var W = 320, H = 150, L = 40, R = 8, T = 10, B = 22;

  function node(tag, attrs, text) {
    var n = document.createElementNS(NS, tag);
    Object.keys(attrs).forEach(function (k) { n.setAttribute(k, attrs[k]); });
    if (text !== undefined) { n.textContent = text; }
    return n;
  }

  function niceStep(span, count) {
    var raw = span / count;
    var mag = Math.pow(10, Math.floor(Math.log(raw) / Math.LN10));
    var r = raw / mag;
    return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
  }

  // Day and hour: "00.47" alone on a 24-hour chart could be today's or yesterday's.
  function timeLabel(ms, spanMs, locale) {
    var d = new Date(ms);
    if (spanMs > 2 * 86400e3) { return d.toLocaleDateString(locale, { day: 'numeric', month: 'short' }); }
    return d.toLocaleString(locale, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
  }

  /* opts: label, unit, digits, thresholds [{value, label, cls}], stepS, startMs, endMs,
     locale, empty (text when there are no points), fmt (number formatter) */
  function draw(container, points, opts) {
    var o = opts || {};
    var fmt = o.fmt || function (v) { return String(Math.round(v * 10) / 10); };
    while (container.firstChild) { container.removeChild(container.firstChild); }
    var pts = (points || []).filter(function (p) { return p[1] !== null && !isNaN(p[1]); });
    if (!pts.length) {
      var p = document.createElement('p');
      p.className = 'chart-empty';
      p.textContent = o.empty || 'No data';
      container.appendChild(p);
      return;
    }
    var t0 = o.startMs || pts[0][0] / 1e6, t1 = o.endMs || pts[pts.length - 1][0] / 1e6;
    if (t1 <= t0) { t1 = t0 + 60e3; }
    var lo = Infinity, hi = -Infinity;
    pts.forEach(function (q) {
      lo = Math.min(lo, q[2] === null ? q[1] : q[2]);
      hi = Math.max(hi, q[3] === null ? q[1] : q[3]);
    });
    var dataLo = lo, dataHi = hi, last = pts[pts.length - 1][1];
    (o.thresholds || []).forEach(function (th) { lo = Math.min(lo, th.value); hi = Math.max(hi, th.value); });
    if (hi === lo) { hi += 1; lo -= 1; }
    var step = niceStep(hi - lo, 3);
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
    function x(ms) { return L + (ms - t0) / (t1 - t0) * (W - L - R); }
    function y(v) { return T + (hi - v) / (hi - lo) * (H - T - B); }
    function f(v) { return v.toFixed(1); }

    var summary = (o.label ? o.label + ': ' : '') + (o.summary ? o.summary(fmt(last), fmt(dataLo), fmt(dataHi))
      : fmt(last) + ' (' + fmt(dataLo) + '–' + fmt(dataHi) + ')');
    var svg = node('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': summary, 'class': 'chart-svg' });
    svg.appendChild(node('title', {}, summary));

    for (var v = lo; v <= hi + step / 2; v += step) {
      svg.appendChild(node('line', { x1: L, x2: W - R, y1: f(y(v)), y2: f(y(v)), 'class': 'grid' }));
      svg.appendChild(node('text', { x: L - 4, y: f(y(v) + 3.5), 'text-anchor': 'end', 'class': 'tick' }, fmt(v)));
    }
    [t0, (t0 + t1) / 2, t1].forEach(function (ms, i) {
      svg.appendChild(node('text', {
        x: f(x(ms)), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === 2 ? 'end' : 'middle', 'class': 'tick'
      }, timeLabel(ms, t1 - t0, o.locale)));
    });

    // Break the line where the gateway heard nothing for a while instead of drawing across it:
    // "a while" is 2.5 buckets, or 2.5 of the series' usual spacing for a sensor that reports
    // less often than the bucket width (every 30 min into 1-minute buckets).
    var gaps = pts.slice(1).map(function (q, i) { return q[0] / 1e6 - pts[i][0] / 1e6; }).sort(function (a, b) { return a - b; });
    var usual = gaps.length ? gaps[Math.floor(gaps.length / 2)] : 0;
    var gapMs = Math.max((o.stepS || 60) * 1e3, usual) * 2.5;
    var runs = [[]];
    pts.forEach(function (q, i) {
      if (i && q[0] / 1e6 - pts[i - 1][0] / 1e6 > gapMs) { runs.push([]); }
      runs[runs.length - 1].push(q);
    });
    runs.forEach(function (run) {
      if (run.length > 1) {
        var top = run.map(function (q) { return f(x(q[0] / 1e6)) + ',' + f(y(q[3] === null ? q[1] : q[3])); });
        var bottom = run.slice().reverse().map(function (q) {
          return f(x(q[0] / 1e6)) + ',' + f(y(q[2] === null ? q[1] : q[2]));
        });
        svg.appendChild(node('polygon', { points: top.concat(bottom).join(' '), 'class': 'band' }));
        svg.appendChild(node('polyline', {
          points: run.map(function (q) { return f(x(q[0] / 1e6)) + ',' + f(y(q[1])); }).join(' '), 'class': 'line'
        }));
      } else {
        svg.appendChild(node('circle', { cx: f(x(run[0][0] / 1e6)), cy: f(y(run[0][1])), r: 2.5, 'class': 'dot' }));
      }
    });

    (o.thresholds || []).forEach(function (th) {
      var yy = f(y(th.value));
      svg.appendChild(node('line', { x1: L, x2: W - R, y1: yy, y2: yy, 'class': 'threshold ' + (th.cls || '') }));
      svg.appendChild(node('text', { x: W - R - 2, y: f(y(th.value) - 3), 'text-anchor': 'end', 'class': 'th-label ' + (th.cls || '') },
        th.label));
    });
    container.appendChild(svg);
  }

  window.GGChart = { draw: draw };
})();
