/* The residents' page: one park's Wi-Fi, polder water level and garden, live over SSE. */
(function () {
  'use strict';
  var GG = window.GG, t = GG.t;

  GG.add({
    id: {
      title: 'Status Taman', skip: 'Langsung ke isi', updated: 'Diperbarui',
      wifi: 'Wi-Fi Taman', clients_now: 'Pengguna sekarang',
      clients_24h: 'Jumlah pengguna, 24 jam terakhir',
      polder: 'Tinggi Air Polder', water_level: 'Tinggi air',
      polder_24h: 'Tinggi air, 24 jam terakhir, dengan garis batas peringatan',
      legend_title: 'Arti tingkat peringatan',
      garden: 'Kondisi Taman', temperature: 'Suhu', humidity: 'Kelembapan',
      temp_24h: 'Suhu, 24 jam terakhir', hum_24h: 'Kelembapan, 24 jam terakhir',
      footer: 'Data dari sensor dan titik akses Wi-Fi di taman ini, diperbarui otomatis.',
      operator_link: 'Halaman petugas',
      wifi_normal: 'Normal', wifi_gangguan: 'Gangguan', wifi_mati: 'Mati', wifi_unknown: 'Belum ada data',
      wifi_unmonitored: 'Tidak terpantau',
      wifi_says_unmonitored: 'Gateway taman sedang tidak bisa melihat titik akses; Wi-Fi mungkin tetap menyala.',
      wifi_says_normal: 'Wi-Fi bisa dipakai.',
      wifi_says_gangguan: 'Sebagian titik akses mati; di beberapa tempat Wi-Fi mungkin tidak ada.',
      wifi_says_mati: 'Wi-Fi tidak bisa dipakai saat ini.',
      wifi_says_unknown: 'Status Wi-Fi belum diketahui.',
      aps: '{up} dari {total} titik akses menyala.',
      lvl_normal: 'Normal', lvl_waspada: 'Waspada', lvl_siaga: 'Siaga', lvl_awas: 'Awas',
      lvl_unknown: 'Belum ada data',
      thresholds: 'Batas: Waspada ≥ {w} · Siaga ≥ {s} · Awas ≥ {a} {u}',
      leg_normal: 'Normal: di bawah {w} {u}. Aman.',
      leg_waspada: 'Waspada: mulai {w} {u}. Air naik; ikuti informasi.',
      leg_siaga: 'Siaga: mulai {s} {u}. Bersiap; jauhi tepi polder.',
      leg_awas: 'Awas: mulai {a} {u}. Bahaya; jauhi polder dan ikuti arahan petugas.',
      measured: 'Diukur {ago}',
      not_measured: 'Tidak terukur',
      not_measured_since: 'Tidak terukur sejak {when} ({ago}). Sensornya tidak terpantau; tinggi air lama tidak ditampilkan.',
      summary: 'terakhir {last}, terendah {lo}, tertinggi {hi}',
      error: 'Data taman belum bisa diambil. Mencoba lagi…',
      old_data: 'Data lama — terakhir {when}', old_data_none: 'Data lama',
      call: 'Darurat: telepon {n}',
      sensor_fault: 'Sensor sedang bermasalah',
      sensor_fault_says: 'Tinggi air tidak ditampilkan sampai sensornya pulih; petugas sudah diberi tahu.',
      eta: 'Perkiraan {lv} dalam ± {eta} ({lo}–{hi})', eta_exact: 'Perkiraan {lv} dalam ± {eta}', eta_open: 'Perkiraan {lv} dalam ± {eta} (paling cepat {lo})',
      rising: 'Naik {r} per jam', rain: 'Hujan 1 jam terakhir', min: '{n} menit', hour: '{n} jam',
      unreachable: 'Gateway tidak terjangkau. Pembaruan terakhir {when}; semua angka di bawah adalah data lama.'
    },
    en: {
      title: 'Park Status', skip: 'Skip to content', updated: 'Updated',
      wifi: 'Park Wi-Fi', clients_now: 'People connected now',
      clients_24h: 'People connected, last 24 hours',
      polder: 'Polder Water Level', water_level: 'Water level',
      polder_24h: 'Water level, last 24 hours, with the warning lines',
      legend_title: 'What the warning levels mean',
      garden: 'Garden Conditions', temperature: 'Temperature', humidity: 'Humidity',
      temp_24h: 'Temperature, last 24 hours', hum_24h: 'Humidity, last 24 hours',
      footer: "Data from this park's sensors and Wi-Fi access points, updated automatically.",
      operator_link: 'Staff page',
      wifi_normal: 'Working', wifi_gangguan: 'Disrupted', wifi_mati: 'Down', wifi_unknown: 'No data yet',
      wifi_unmonitored: 'Not monitored',
      wifi_says_unmonitored: "The park's gateway cannot see the access points right now; the Wi-Fi may well be working.",
      wifi_says_normal: 'You can use the Wi-Fi.',
      wifi_says_gangguan: 'Some access points are down; parts of the park may have no Wi-Fi.',
      wifi_says_mati: 'The Wi-Fi cannot be used right now.',
      wifi_says_unknown: 'The Wi-Fi status is not known yet.',
      aps: '{up} of {total} access points on.',
      lvl_normal: 'Normal', lvl_waspada: 'Caution (Waspada)', lvl_siaga: 'Warning (Siaga)',
      lvl_awas: 'Danger (Awas)', lvl_unknown: 'No data yet',
      thresholds: 'Levels: Caution ≥ {w} · Warning ≥ {s} · Danger ≥ {a} {u}',
      leg_normal: 'Normal: below {w} {u}. Safe.',
      leg_waspada: 'Caution (Waspada): from {w} {u}. The water is rising; stay informed.',
      leg_siaga: 'Warning (Siaga): from {s} {u}. Get ready; keep away from the edge.',
      leg_awas: 'Danger (Awas): from {a} {u}. Keep away from the polder and follow the officials.',
      measured: 'Measured {ago}',
      not_measured: 'Not measured',
      not_measured_since: 'Not measured since {when} ({ago}). Its sensor cannot be seen; no old level is shown.',
      summary: 'latest {last}, lowest {lo}, highest {hi}',
      old_data: 'Old data — last {when}', old_data_none: 'Old data',
      call: 'Emergency: call {n}',
      sensor_fault: 'The sensor has a problem',
      sensor_fault_says: 'No water level is shown until the sensor is fixed; the staff have been told.',
      eta: '{lv} expected in about {eta} ({lo}–{hi})', eta_exact: '{lv} expected in about {eta}', eta_open: '{lv} expected in about {eta} (at the earliest {lo})',
      rising: 'Rising {r} per hour', rain: 'Rain in the last hour', min: '{n} min', hour: '{n} h',
      unreachable: 'The gateway cannot be reached. Last update {when}; every figure below is old.',
      error: 'Could not get the park data yet. Trying again…'
    }
  });

  var ICON = { normal: '✓', gangguan: '!', mati: '✕', unknown: '?', unmonitored: '⊘', old: '…', waspada: '!', siaga: '!!', awas: '!!!',
    'not-measured': '⊘', fault: '⚠' };
  var $ = function (id) { return document.getElementById(id); };
  var data = null;
  var history = {};
  var chartKey = '';
  var DAY_MS = 86400e3;

  function status(node, level, word) {
    node.setAttribute('data-level', level);
    node.querySelector('.icon').textContent = ICON[level] || '?';
    var w = node.querySelector('.word');
    // Only touch the text when it changes, so aria-live announces changes and nothing else.
    if (w.textContent !== word) { w.textContent = word; }
  }

  // When the live stream was lost (the page's clock, ms); null while it is on.
  var lostSince = null;

  function liveState() {
    var node = $('live');
    return node ? node.getAttribute('data-state') : 'on';
  }

  // Lost for longer than 2 x the keepalive: the gateway itself cannot be reached.
  function unreachable() {
    return lostSince !== null && data && Date.now() - lostSince > 1000 * (data.unreachable_after_s || 30);
  }

  // Older than pages.fresh_s by now, or the stream lost that long: old, whatever it said.
  function isOld(ns) {
    if (!data) { return true; }
    var limitMs = 1000 * (data.fresh_s || 900);
    if (lostSince !== null && Date.now() - lostSince > limitMs) { return true; }
    return !ns || GG.serverNowMs() - ns / 1e6 > limitMs;
  }

  function hhmm(ns) {
    return ns ? new Date(ns / 1e6).toLocaleTimeString(GG.lang() === 'id' ? 'id-ID' : 'en-GB',
      { hour: '2-digit', minute: '2-digit' }) : '';
  }

  function oldWord(ns) { return ns ? t('old_data', { when: hhmm(ns) }) : t('old_data_none'); }

  // Siaga and Awas: the polder goes first, what to do is shown in full with the number to call,
  // the levels' meaning is unfolded. Back to normal: the usual order again.
  function loud(p, alarm) {
    var section = $('polder'), grid = section.parentNode;
    var box = $('polder-guidance');
    box.hidden = !alarm;
    var legend = section.querySelector('details.legend');
    if (alarm) {
      if (grid.firstElementChild !== section) { grid.insertBefore(section, grid.firstElementChild); }
      $('polder-guidance-text').textContent = (p.guidance || {})[alarm] || '';
      var n = p.emergency_number || '112', call = $('polder-call');
      call.textContent = t('call', { n: n });
      call.setAttribute('href', 'tel:' + n.replace(/[^0-9+]/g, ''));
      if (legend) { legend.open = true; }
    } else if (grid.firstElementChild === section) {
      grid.insertBefore(section, $('garden'));
    }
  }

  function duration(s) {
    return s < 3600 ? t('min', { n: Math.max(5, Math.round(s / 300) * 5) })
      : t('hour', { n: GG.num(s / 3600, s >= 3 * 3600 ? 0 : 1) });
  }

  // While the water rises (and only while the reading is current and trusted): how fast, and
  // when the next level, with its band. Absent when flat, falling or untrusted.
  function estimate(p, current) {
    var eta = $('polder-eta'), trend = $('polder-trend');
    var rising = current && p.trend_per_h > 0 && p.eta_next_s !== null && p.eta_next_s !== undefined;
    eta.hidden = trend.hidden = !rising;
    if (!rising) { return; }
    var per = p.unit === 'm' ? GG.num(p.trend_per_h * 100, 0) + ' cm' : GG.num(p.trend_per_h) + ' ' + p.unit;
    trend.textContent = t('rising', { r: per });
    var lo = duration(p.eta_low_s || p.eta_next_s), hi = p.eta_high_s ? duration(p.eta_high_s) : '';
    var exact = lo === hi;
    var unit = function (x) { return x.replace(/^[\d.,]+ ?/, ''); };
    // "25–40 menit", "40 menit–2 jam"; no band when both ends read the same.
    var vars = { lv: t('lvl_' + p.next_level), eta: duration(p.eta_next_s),
      lo: hi && unit(lo) === unit(hi) ? lo.replace(/ ?[^\d.,\s].*$/, '') : lo, hi: hi };
    eta.textContent = t(!hi ? 'eta_open' : exact ? 'eta_exact' : 'eta', vars);
  }

  function withUnit(v, unit) { return v === null || v === undefined ? t('no_data') : GG.num(v) + ' ' + unit; }

  function render() {
    if (!data) { return; }
    $('park-name').textContent = data.name || data.site;
    document.title = (data.name || data.site) + ' · ' + t('title');

    var wifi = data.wifi || { status: 'unknown' };
    var ws = ICON[wifi.status] ? wifi.status : 'unknown';
    if (unreachable()) {
      status($('wifi-status'), 'old', oldWord(data.updated_ns));
    } else {
      status($('wifi-status'), ws, t('wifi_' + ws));
    }
    $('wifi-aps').textContent = t('wifi_says_' + ws) + (wifi.aps_total ? ' ' + t('aps', { up: wifi.aps_up, total: wifi.aps_total }) : '');
    $('clients').textContent = wifi.clients_now === null || wifi.clients_now === undefined ? '–' : GG.num(wifi.clients_now, 0);

    var p = data.polder, alarm = null;
    $('polder').hidden = !p;
    if (p) {
      // Its sensor offline or unmonitored: "not measured", never an old level.
      if (p.measured === false) {
        status($('polder-status'), 'not-measured', t('not_measured'));
        $('polder-value').textContent = '–';
      } else if (p.sensor_fault) {
        // Judged untrustworthy (stuck, out of range, silent): no number, never an old one.
        status($('polder-status'), 'fault', t('sensor_fault'));
        $('polder-value').textContent = '–';
      } else if (p.value !== null && p.value !== undefined &&
                 (p.stale || p.state !== 'online' || isOld(p.time_ns))) {
        // Old: the last value stays readable, but no level colour is kept on it.
        status($('polder-status'), 'old', oldWord(p.time_ns));
        $('polder-value').textContent = withUnit(p.value, p.unit);
      } else {
        var lv = ICON[p.level] ? p.level : 'unknown';
        status($('polder-status'), lv, t('lvl_' + lv));
        $('polder-value').textContent = withUnit(p.value, p.unit);
        alarm = lv === 'siaga' || lv === 'awas' ? lv : null;
      }
      loud(p, alarm);
      estimate(p, alarm !== null || (p.level === 'waspada' || p.level === 'normal') && !p.stale && !isOld(p.time_ns) && !p.sensor_fault);
      var rain = $('polder-rain');
      rain.hidden = p.rain_mm_1h === null || p.rain_mm_1h === undefined;
      if (!rain.hidden) { $('polder-rain-value').textContent = GG.num(p.rain_mm_1h) + ' mm'; }
      var th = p.thresholds || {};
      var vars = { w: GG.num(th.waspada), s: GG.num(th.siaga), a: GG.num(th.awas), u: p.unit };
      $('polder-thresholds').textContent = th.waspada === undefined ? '' : t('thresholds', vars);
      var ul = $('polder-legend');
      ul.textContent = '';
      ['normal', 'waspada', 'siaga', 'awas'].forEach(function (k) {
        ul.appendChild(GG.el('li', { 'data-level': k }, [
          GG.el('span', { 'class': 'icon', 'aria-hidden': 'true', text: ICON[k] }), ' ' + t('leg_' + k, vars)
        ]));
      });
    }

    var g = data.garden;
    $('garden').hidden = !g;
    if (g) {
      $('temperature').textContent = withUnit(g.temperature_c, '°C');
      $('humidity').textContent = withUnit(g.humidity_pct, '%');
    }
    $('error').hidden = true;
    tick();
    drawCharts();
  }

  // Relative times move on their own; only these texts are redrawn every few seconds.
  function tick() {
    if (!data) { return; }
    var state = liveState();
    // Silent for 2 x the keepalive: dead, even without an error (out of the park's Wi-Fi).
    var silent = GG.liveSilentMs() > 1000 * (data.unreachable_after_s || 30);
    if (state === 'on' && !silent) { lostSince = null; }
    else if (lostSince === null) { lostSince = silent ? Date.now() - GG.liveSilentMs() : Date.now(); }
    var banner = $('unreachable');
    var away = unreachable();
    if (banner) {
      banner.hidden = !away;
      var text = away ? t('unreachable', { when: hhmm(data.updated_ns || data.time_ns) }) : '';
      if (banner.textContent !== text) { banner.textContent = text; }
    }
    if (away !== wasAway || oldPolder() !== wasOld) { wasAway = away; wasOld = oldPolder(); render(); return; }
    $('updated').textContent = GG.ago(data.updated_ns);
    var p = data.polder;
    if (p && p.sensor_fault && p.measured !== false) {
      $('polder-time').textContent = t('sensor_fault_says');
    } else if (p && p.measured === false) {
      $('polder-time').textContent = p.not_measured_since_ns ? t('not_measured_since', { when: GG.when(p.not_measured_since_ns), ago: GG.ago(p.not_measured_since_ns) }) : t('not_measured');
    } else if (p) { $('polder-time').textContent = p.time_ns ? t('measured', { ago: GG.ago(p.time_ns) }) : ''; }
    if (data.garden) {
      var gt = data.garden.time_ns;
      var gardenOld = isOld(gt) || data.garden.stale || data.garden.state !== 'online';
      $('garden-time').textContent = gardenOld ? oldWord(gt) + ' (' + GG.ago(gt) + ')'
        : (gt ? t('measured', { ago: GG.ago(gt) }) : '');
    }
  }

  var wasAway = false, wasOld = false;
  function oldPolder() { return !!(data && data.polder && isOld(data.polder.time_ns)); }

  function chartOpts(name) {
    var now = data.time_ns / 1e6;
    var o = {
      locale: GG.locale(), empty: t('chart_empty'), fmt: function (v) { return GG.num(v); },
      startMs: now - DAY_MS, endMs: now, stepS: (history[name] || {}).step_s,
      summary: function (last, lo, hi) { return t('summary', { last: last, lo: lo, hi: hi }); }
    };
    if (name === 'polder' && data.polder && data.polder.thresholds) {
      var th = data.polder.thresholds;
      o.label = t('water_level') + ' (' + data.polder.unit + ')';
      o.thresholds = ['waspada', 'siaga', 'awas'].filter(function (k) { return th[k] !== undefined && th[k] !== null; })
        .map(function (k) { return { value: th[k], label: t('lvl_' + k).replace(/ \(.*\)/, ''), cls: k }; });
    } else {
      o.label = t({ clients: 'clients_now', temperature: 'temperature', humidity: 'humidity' }[name] || name);
    }
    return o;
  }

  // The value in the headline, newer than the history's last bucket (rollups are written once
  // a minute): the chart ends where the headline is.
  function latest(name) {
    if (!data) { return null; }
    if (name === 'polder' && data.polder && data.polder.measured !== false) {
      return [data.polder.time_ns, data.polder.value];
    }
    if (data.garden && (name === 'temperature' || name === 'humidity')) {
      return [data.garden.time_ns, name === 'temperature' ? data.garden.temperature_c : data.garden.humidity_pct];
    }
    if (name === 'clients' && data.wifi) { return [data.time_ns, data.wifi.clients_now]; }
    return null;
  }

  function drawCharts() {
    Object.keys(history).forEach(function (name) {
      var box = $('chart-' + name);
      if (!box) { return; }
      var points = (history[name].points || []).slice();
      var now = latest(name), end = points.length ? points[points.length - 1][0] : 0;
      if (now && now[0] && now[1] !== null && now[1] !== undefined && now[0] > end) {
        points.push([now[0], now[1], now[1], now[1]]);
      }
      window.GGChart.draw(box, points, chartOpts(name));
    });
  }

  function loadCharts() {
    if (!data || !data.charts) { return; }
    Object.keys(data.charts).forEach(function (name) {
      var c = data.charts[name];
      if (!c || !$('chart-' + name)) { return; }
      GG.getJSON('/api/v1/history?device=' + encodeURIComponent(c.device) + '&field=' +
                 encodeURIComponent(c.field) + '&range=24h')
        .then(function (h) { history[name] = h; drawCharts(); })
        .catch(function () { /* the chart keeps what it had; the next refresh tries again */ });
    });
  }

  function accept(body) {
    data = body;
    GG.syncClock(body.time_ns);
    render();
    var key = JSON.stringify(body.charts || {});
    if (key !== chartKey) { chartKey = key; loadCharts(); }
  }

  function load() {
    return GG.getJSON('/api/v1/resident').then(accept).catch(function () {
      if (!data) { $('error').textContent = t('error'); $('error').hidden = false; }
      setTimeout(load, 15000);
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('lang').addEventListener('click', function () { GG.setLang(GG.lang() === 'id' ? 'en' : 'id'); });
    GG.onLang(render);
    GG.setLang(GG.lang());
    var first = true;
    load();
    // Every (re)connection fetches the whole state once: events missed while away are not replayed.
    GG.live({ resident: accept }, function () { if (!first) { load(); loadCharts(); } first = false; });
    setInterval(tick, 1000);
    setInterval(loadCharts, 5 * 60e3);
  });
})();
