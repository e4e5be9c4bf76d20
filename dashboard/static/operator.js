/* The operator page: nothing but the token form until GET /api/v1/session says yes. */
(function () {
  'use strict';
  var GG = window.GG, t = GG.t, el = GG.el;

  GG.add({
    id: {
      skip: 'Langsung ke isi', op_title: 'Halaman Petugas', logout: 'Keluar',
      login_title: 'Masuk sebagai petugas', token_label: 'Token operator', login: 'Masuk',
      wrong_token: 'Token salah. Periksa dan coba lagi.', unreachable: 'Gateway tidak bisa dihubungi.',
      summary_title: 'Gateway', chart_title: 'Grafik', device: 'Perangkat', field: 'Besaran',
      range: 'Rentang', devices_title: 'Perangkat', state: 'Status', since: 'Sejak',
      last_seen: 'Terakhir terdengar', uptime: 'Uptime 24 j / 7 h / 30 h', latest: 'Nilai terakhir',
      outages_title: 'Gangguan', start: 'Mulai', end: 'Selesai', duration: 'Lama', cause: 'Sebab',
      dead_title: 'Pesan ditolak (dead letters)', quarantine_title: 'Karantina (ditolak InfluxDB)',
      at: 'Waktu', source: 'Sumber', kind: 'Jenis', error: 'Galat', payload: 'Isi', reason: 'Alasan',
      line: 'Baris', resident_link: 'Halaman warga', ongoing: 'masih berlangsung',
      st_online: 'Menyala', st_offline: 'Mati', st_unknown: 'Belum diketahui',
      st_unmonitored: 'Tidak terpantau',
      none: 'Tidak ada.', load_failed: 'Sebagian data gagal dimuat: {what}',
      s_gateway: 'Gateway', s_mqtt: 'MQTT', s_influx: 'InfluxDB', s_spool: 'Spool',
      s_oldest: 'Tertua belum terkirim', s_counts: 'Diterima / bacaan / ditolak / ditulis',
      s_tables: 'Dead letters / karantina', s_evicted: 'Dibuang (spool penuh)',
      yes: 'terhubung', no: 'terputus', rows: 'baris', uptime_for: 'hidup {d}',
      discovered_title: 'Perangkat yang ditemukan',
      discovered_about: 'Perangkat yang tidak ada di konfigurasi. Yang tidak dikenal boleh dilupakan; yang ingin dipertahankan, tambahkan di devices:.',
      discovered_count: '{n} dari {total} ditampilkan', forget: 'Lupakan', action: 'Tindakan',
      forget_label: 'Lupakan {id}', forget_confirm: 'Lupakan perangkat {id}? Ia ditemukan lagi bila mengirim lagi.',
      forget_failed: 'Gagal melupakan {id}: {why}',
      disk_title: 'Kartu SD', s_disk: 'Kartu SD', free: 'kosong',
      polder_title: 'Polder', lv_normal: 'Normal', lv_waspada: 'Waspada', lv_siaga: 'Siaga', lv_awas: 'Awas',
      lv_unknown: 'Belum diketahui', q_ok: 'sensor dapat dipercaya', q_range: 'di luar jangkauan sensor',
      q_spike: 'lonjakan ditolak', q_flatline: 'sensor macet (nilai tidak berubah)', q_stale: 'tidak ada data',
      q_disagree: 'dua sensor tidak sepakat', q_not_measured: 'sensor tidak terpantau',
      p_trend: 'naik {r} {u}/jam', p_eta: '{lv} dalam ± {m} menit ({lo}–{hi})',
      siren: 'Sirene', sr_off: 'mati', sr_on: 'MENYALA', sr_silenced: 'disenyapkan sampai {when}',
      sr_test: 'uji', sr_error: 'gagal: {e}', silence: 'Senyapkan 1 jam', resume: 'Lanjutkan', test: 'Uji 5 detik',
      siren_failed: 'Perintah sirene gagal: {why}',
      disk_ok: 'baik', disk_low: 'hampir penuh', disk_disk_full: 'PENUH', disk_io_error: 'RUSAK (I/O error)',
      disk_low_text: 'Sisa {free}, di bawah cadangan {reserve}: spool membuang bacaan tertua agar kartu tidak penuh.',
      disk_full_text: 'Kartu SD penuh (sisa {free}). Bacaan baru tidak disimpan dan tidak dikonfirmasi; broker menyimpannya sampai ada ruang. Kosongkan ruang di kartu.',
      disk_io_text: 'Kartu SD menolak menulis ({error}). Periksa atau ganti kartu.',
      notice: '{file}: rusak saat mulai ({detail}); dipindah ke {aside}; {salvaged} baris diselamatkan, {lost} hilang.',
      unknown_n: 'tidak diketahui', acknowledge: 'Sudah dibaca', ack_failed: 'Gagal: {why}',
      observed: 'teramati {a} / {b} / {c}',
      old_values: 'Data lama ({when}):',
      ap_now: '↓ {rx} ↑ {tx} · {n} pengguna', ap_today: 'hari ini ↓ {rx} ↑ {tx} · {n} pengguna berbeda',
      ap_resets: '{n} kali penghitung diulang',
      c_missed: 'tidak ada data selama {n} kali interval {s} dtk', c_reported: 'perangkat melaporkan dirinya offline',
      c_reading: 'data masuk', c_port_gone: 'adaptor USB hilang', c_broker_down: 'broker MQTT tidak terjangkau',
      c_gw_stopped: 'gateway dihentikan', c_gw_crashed: 'gateway mati listrik atau macet', c_gw_started: 'gateway menyala',
      c_connected: 'tersambung lagi', c_port_open: 'adaptor kembali', c_forgotten: 'dilupakan', c_unmonitored: 'tidak terpantau',
      dev_summary: '{up} dari {total} perangkat menyala', dev_down: '{n} mati',
      dev_unmonitored: '{n} tidak terpantau', dev_unknown: '{n} belum diketahui',
      filter_label: 'Tampilkan', filter_all: 'Semua', filter_problem: 'Yang bermasalah',
      gw_unreachable: 'Gateway tidak terjangkau. Data terakhir {when}; yang tampil di bawah adalah data lama.',
      broker_down: 'Broker MQTT taman tidak terjangkau sejak {when}: perangkat MQTT tidak terpantau (bukan mati). Periksa Mosquitto: sudo systemctl status mosquitto.'
    },
    en: {
      skip: 'Skip to content', op_title: 'Operator page', logout: 'Log out',
      login_title: 'Operator sign-in', token_label: 'Operator token', login: 'Sign in',
      wrong_token: 'Wrong token. Check it and try again.', unreachable: 'Cannot reach the gateway.',
      summary_title: 'Gateway', chart_title: 'Chart', device: 'Device', field: 'Field',
      range: 'Range', devices_title: 'Devices', state: 'State', since: 'Since',
      last_seen: 'Last heard', uptime: 'Uptime 24 h / 7 d / 30 d', latest: 'Latest values',
      outages_title: 'Outages', start: 'Start', end: 'End', duration: 'Duration', cause: 'Cause',
      dead_title: 'Dead letters (refused input)', quarantine_title: 'Quarantine (refused by InfluxDB)',
      at: 'At', source: 'Source', kind: 'Kind', error: 'Error', payload: 'Payload', reason: 'Reason',
      line: 'Line', resident_link: 'Residents\' page', ongoing: 'ongoing',
      st_online: 'Online', st_offline: 'Offline', st_unknown: 'Unknown',
      st_unmonitored: 'Unmonitored',
      none: 'None.', load_failed: 'Some data failed to load: {what}',
      s_gateway: 'Gateway', s_mqtt: 'MQTT', s_influx: 'InfluxDB', s_spool: 'Spool',
      s_oldest: 'Oldest unsent', s_counts: 'Received / readings / rejected / written',
      s_tables: 'Dead letters / quarantine', s_evicted: 'Evicted (spool full)',
      yes: 'connected', no: 'disconnected', rows: 'rows', uptime_for: 'up {d}',
      discovered_title: 'Discovered devices',
      discovered_about: 'Devices that are not in the config. Forget the ones nobody knows; to keep one, add it under devices:.',
      discovered_count: 'showing {n} of {total}', forget: 'Forget', action: 'Action',
      forget_label: 'Forget {id}', forget_confirm: 'Forget device {id}? It is discovered again if it sends again.',
      forget_failed: 'Could not forget {id}: {why}',
      disk_title: 'SD card', s_disk: 'SD card', free: 'free',
      polder_title: 'Polder', lv_normal: 'Normal', lv_waspada: 'Caution (Waspada)', lv_siaga: 'Warning (Siaga)',
      lv_awas: 'Danger (Awas)', lv_unknown: 'Not known yet', q_ok: 'sensor trusted', q_range: 'out of the sensor\'s range',
      q_spike: 'spike rejected', q_flatline: 'sensor stuck (value unchanged)', q_stale: 'no data',
      q_disagree: 'the two sensors disagree', q_not_measured: 'sensor not monitored',
      p_trend: 'rising {r} {u}/h', p_eta: '{lv} in about {m} min ({lo}–{hi})',
      siren: 'Siren', sr_off: 'off', sr_on: 'SOUNDING', sr_silenced: 'silenced until {when}',
      sr_test: 'test', sr_error: 'failed: {e}', silence: 'Silence 1 h', resume: 'Resume', test: 'Test 5 s',
      siren_failed: 'Siren command failed: {why}',
      disk_ok: 'ok', disk_low: 'low', disk_disk_full: 'FULL', disk_io_error: 'FAILING (I/O error)',
      disk_low_text: '{free} free, under the {reserve} reserve: the spool evicts its oldest readings so the card does not fill.',
      disk_full_text: 'The SD card is full ({free} free). New readings are neither stored nor acknowledged; the broker keeps them until there is room. Make room on the card.',
      disk_io_text: 'The SD card refuses writes ({error}). Check or replace the card.',
      notice: '{file}: damaged at start ({detail}); moved to {aside}; {salvaged} rows kept, {lost} lost.',
      unknown_n: 'unknown', acknowledge: 'Acknowledge', ack_failed: 'Failed: {why}',
      observed: 'observed {a} / {b} / {c}',
      old_values: 'Old data ({when}):',
      ap_now: '↓ {rx} ↑ {tx} · {n} clients', ap_today: 'today ↓ {rx} ↑ {tx} · {n} distinct clients',
      ap_resets: '{n} counter resets',
      c_missed: 'no reading for {n} intervals of {s} s', c_reported: 'the device reported itself offline',
      c_reading: 'a reading came', c_port_gone: 'USB adapter gone', c_broker_down: 'MQTT broker unreachable',
      c_gw_stopped: 'gateway stopped', c_gw_crashed: 'gateway lost power or crashed', c_gw_started: 'gateway started',
      c_connected: 'connected again', c_port_open: 'adapter back', c_forgotten: 'forgotten', c_unmonitored: 'unmonitored',
      dev_summary: '{up} of {total} devices online', dev_down: '{n} offline',
      dev_unmonitored: '{n} unmonitored', dev_unknown: '{n} unknown',
      filter_label: 'Show', filter_all: 'All', filter_problem: 'With a problem',
      gw_unreachable: 'The gateway cannot be reached. Last data {when}; what shows below is old.',
      broker_down: "The park's MQTT broker cannot be reached since {when}: MQTT devices are unmonitored (not down). Check Mosquitto: sudo systemctl status mosquitto."
    }
  });

  // unmonitored: the gateway cannot see it (its bus's adapter is gone); neither up nor down.
  var ICON = { online: '✓', offline: '✕', unknown: '?', unmonitored: '⊘' };
  var $ = function (id) { return document.getElementById(id); };
  // devices: the listed ones (config, the gateway) and the discovered page, for lookups;
  // discoveredTotal: how many discovered devices there are (X-Total-Count).
  var model = { devices: [], outages: [], status: null, dead: [], quarantine: [], discoveredTotal: 0, polders: [] };
  var DISCOVERED_PAGE = 100;
  var es = null, timer = null, signedIn = false, renderQueued = false, outageTimer = null;
  var refreshTimer = null;

  function showLogin(message) {
    signedIn = false;
    $('app').hidden = true;
    $('logout').hidden = true;
    $('live').hidden = true;
    $('gw').textContent = '';
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    if (es) { es.close(); es = null; }
    if (timer) { clearInterval(timer); timer = null; }
    model = { devices: [], outages: [], status: null, dead: [], quarantine: [], discoveredTotal: 0, polders: [] };
    $('token').focus();
  }

  function showApp() {
    signedIn = true;
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = false;
    $('live').hidden = false;
    refresh();
    var first = true;
    // A reconnection fetches everything again: events missed while away are not replayed.
    es = GG.live({ state: onState, reading: onReading }, function () {
      if (signedIn && !first) { refresh(); }
      first = false;
    });
    timer = setInterval(function () { refresh(); }, 30000);
  }

  function authed(url) {
    return GG.getJSON(url).catch(function (e) {
      if (e.status === 401) { throw e; }
      return { failed: url };
    });
  }

  // A page of a list with the X-Total-Count header: { items: [...], total: n }.
  function authedPage(url) {
    return fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) {
        if (r.status === 401) { var e = new Error(url + ': HTTP 401'); e.status = 401; throw e; }
        if (!r.ok) { return { failed: url }; }
        var total = parseInt(r.headers.get('X-Total-Count') || '', 10);
        return r.json().then(function (items) { return { items: items, total: isNaN(total) ? items.length : total }; });
      }, function () { return { failed: url }; });
  }

  var LISTED = '/api/v1/devices?origin=config&origin=gateway';
  var DISCOVERED = '/api/v1/devices?origin=discovered&limit=' + DISCOVERED_PAGE;

  function refresh() {
    return Promise.all([
      authed(LISTED), authed('/api/v1/outages?limit=50'), authed('/api/v1/status'),
      authed('/api/v1/dead-letters?limit=20'), authed('/api/v1/quarantine?limit=20'),
      authedPage(DISCOVERED), authed('/api/v1/polder')
    ]).then(function (r) {
      if (!signedIn) { return; }
      var failed = r.filter(function (x) { return x && x.failed; }).map(function (x) { return x.failed; });
      if (!r[0].failed && !r[5].failed) {
        model.devices = r[0].concat(r[5].items);
        model.discoveredTotal = r[5].total;
      }
      if (!r[1].failed) { model.outages = r[1]; }
      if (!r[2].failed) { model.status = r[2]; }
      if (!r[3].failed) { model.dead = r[3]; }
      if (!r[4].failed) { model.quarantine = r[4]; }
      if (!r[6].failed) { model.polders = r[6].polders || []; }
      if (failed.length < r.length) { model.heardNs = Date.now() * 1e6; }
      model.unreachable = failed.length === r.length;
      var names = failed.map(sectionName).filter(function (v, i, a) { return a.indexOf(v) === i; });
      $('app-error').hidden = !failed.length || model.unreachable;
      $('app-error').textContent = failed.length ? t('load_failed', { what: names.join(', ') }) : '';
      render();
      fillChartSelects();
    }).catch(function (e) {
      if (e.status === 401) { showLogin(); }
    });
  }

  // What failed to load, in the page's words rather than API paths.
  function sectionName(path) {
    var p = String(path);
    if (p.indexOf('origin=discovered') >= 0) { return t('discovered_title'); }
    if (p.indexOf('/devices') >= 0) { return t('devices_title'); }
    if (p.indexOf('/outages') >= 0) { return t('outages_title'); }
    if (p.indexOf('/status') >= 0) { return t('summary_title'); }
    if (p.indexOf('/dead-letters') >= 0) { return t('dead_title'); }
    if (p.indexOf('/quarantine') >= 0) { return t('quarantine_title'); }
    if (p.indexOf('/polder') >= 0) { return t('polder_title'); }
    return p;
  }

  // Down first: what needs a technician is at the top.
  var ORDER = { offline: 0, unmonitored: 1, unknown: 2, online: 3 };
  function byTrouble(a, b) {
    var d = (ORDER[a.state] === undefined ? 2 : ORDER[a.state]) - (ORDER[b.state] === undefined ? 2 : ORDER[b.state]);
    return d || String(a.name || a.id).localeCompare(String(b.name || b.id));
  }

  function renderBanners() {
    var banner = $('gw-banner'), s = model.status || {}, m = s.mqtt || {};
    var text = '';
    if (model.unreachable) {
      text = t('gw_unreachable', { when: model.heardNs ? GG.when(model.heardNs) : '–' });
    } else if (m.state && m.state !== 'connected' && m.state !== 'starting') {
      var broker = model.devices.filter(function (d) { return d.cause === 'broker_down'; });
      var since = broker.length ? Math.min.apply(null, broker.map(function (d) { return d.since_ns || Infinity; })) : null;
      text = t('broker_down', { when: since && isFinite(since) ? GG.when(since) : '–' });
    }
    banner.hidden = !text;
    if (banner.textContent !== text) { banner.textContent = text; }
    // While something is wrong, look again every few seconds rather than every 30.
    if (text && !bannerTimer) {
      bannerTimer = setTimeout(function () { bannerTimer = null; refresh(); }, 5000);
    }
  }
  var bannerTimer = null;

  function onState(ev) {
    var d = find(ev.device);
    if (!d) { refreshSoon(); return; } // a device we have not seen yet: take the whole list
    d.state = ev.state; d.since_ns = ev.since_ns; d.cause = ev.cause;
    if (ev.cause === 'broker_down') { refreshSoon(); }
    queueRender();
    // The outage list changes with a state: ask for it again, once per burst of events.
    clearTimeout(outageTimer);
    outageTimer = setTimeout(function () {
      authed('/api/v1/outages?limit=50').then(function (o) { if (!o.failed) { model.outages = o; queueRender(); } })
        .catch(function () { /* the 30 s refresh will try again */ });
    }, 1000);
  }

  function onReading(ev) {
    var d = find(ev.device);
    if (!d) { return; }
    var latest = d.latest || { fields: {} };
    var fields = {};
    Object.keys(latest.fields || {}).forEach(function (k) { fields[k] = latest.fields[k]; });
    Object.keys(ev.fields || {}).forEach(function (k) { fields[k] = ev.fields[k]; });
    d.latest = { time_ns: ev.time_ns, fields: fields };
    d.last_seen_ns = Math.max(d.last_seen_ns || 0, ev.time_ns);
    queueRender();
  }

  // At most one refresh every few seconds however many new devices speak up (a flood of
  // made-up ids sends a state event for each one the gateway takes on).
  function refreshSoon() {
    if (refreshTimer) { return; }
    refreshTimer = setTimeout(function () { refreshTimer = null; refresh(); }, 3000);
  }

  function forget(id, button) {
    if (!window.confirm(t('forget_confirm', { id: id }))) { return; }
    button.disabled = true;
    $('discovered-error').textContent = '';
    fetch('/api/v1/devices/' + encodeURIComponent(id), {
      method: 'DELETE', credentials: 'same-origin', headers: { Accept: 'application/json' }
    }).then(function (r) {
      if (r.ok) {
        model.devices = model.devices.filter(function (d) { return d.id !== id; });
        model.discoveredTotal = Math.max(0, model.discoveredTotal - 1);
        render();
        refresh();
        return;
      }
      if (r.status === 401) { showLogin(); return; }
      return r.json().catch(function () { return {}; }).then(function (body) {
        button.disabled = false;
        $('discovered-error').textContent = t('forget_failed', { id: id, why: (body && body.detail) || 'HTTP ' + r.status });
      });
    }, function () {
      button.disabled = false;
      $('discovered-error').textContent = t('forget_failed', { id: id, why: t('unreachable') });
    });
  }

  function find(id) {
    for (var i = 0; i < model.devices.length; i++) { if (model.devices[i].id === id) { return model.devices[i]; } }
    return null;
  }

  function queueRender() {
    if (renderQueued) { return; }
    renderQueued = true;
    setTimeout(function () { renderQueued = false; render(); }, 300);
  }

  function cell(content, cls) {
    var td = el('td', cls ? { 'class': cls } : null);
    (Array.isArray(content) ? content : [content]).forEach(function (c) {
      td.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return td;
  }

  function fill(tbody, rows, cols) {
    tbody.textContent = '';
    if (!rows.length) {
      tbody.appendChild(el('tr', { 'class': 'empty' }, [el('td', { colspan: String(cols), text: t('none') })]));
      return;
    }
    // Each cell carries its column's name: on a phone the rows become cards that say it.
    var heads = tbody.parentNode.tHead ? tbody.parentNode.tHead.rows[0].cells : [];
    rows.forEach(function (r) {
      for (var i = 0; i < r.cells.length && i < heads.length; i++) {
        r.cells[i].setAttribute('data-label', heads[i].textContent);
      }
      tbody.appendChild(r);
    });
  }

  function stateBadge(state) {
    var s = ICON[state] ? state : 'unknown';
    return el('span', { 'class': 'status', 'data-level': s }, [
      el('span', { 'class': 'icon', 'aria-hidden': 'true', text: ICON[s] }), el('span', { 'class': 'word', text: t('st_' + s) })
    ]);
  }

  function pct(v) { return v === null || v === undefined ? '–' : GG.num(v, 1) + ' %'; }

  // The gateway's causes, in the page's language; one it does not know is shown as it is.
  function causeText(cause) {
    if (!cause) { return '–'; }
    var m = /^no reading for ([\d.]+) intervals of ([\d.]+) s$/.exec(cause);
    if (m) { return t('c_missed', { n: GG.num(Number(m[1])), s: GG.num(Number(m[2])) }); }
    m = /^(forgotten|unmonitored) \((.*)\)$/.exec(cause);
    if (m) { return t('c_' + m[1]) + ' (' + causeText(m[2]) + ')'; }
    var known = { 'reading': 'c_reading', 'port_gone': 'c_port_gone', 'broker_down': 'c_broker_down',
      'gateway stopped': 'c_gw_stopped', 'gateway started': 'c_gw_started', 'connected': 'c_connected',
      'port_open': 'c_port_open', 'device reported offline': 'c_reported',
      'gateway lost power or crashed (time of its last heartbeat)': 'c_gw_crashed' };
    return known[cause] ? t(known[cause]) : cause;
  }

  // A field's unit from its name's suffix (the gateway's fields carry their unit).
  var UNITS = [['_pct', ' %'], ['_cm', ' cm'], ['_mm', ' mm'], ['_m', ' m'], ['_c', ' °C'],
    ['_v', ' V'], ['_a', ' A'], ['_w', ' W'], ['_hpa', ' hPa'], ['_lux', ' lx'], ['_ms', ' ms']];

  function bytes(n) {
    if (n === null || n === undefined) { return '–'; }
    if (n >= 1073741824) { return GG.num(n / 1073741824, 1) + ' GiB'; }
    if (n >= 1048576) { return GG.num(n / 1048576, 1) + ' MiB'; }
    return GG.num(n / 1024, 0) + ' KiB';
  }

  function rate(bps) {
    if (bps === null || bps === undefined) { return '–'; }
    if (bps >= 1e6) { return GG.num(bps / 1e6, 1) + ' Mbit/s'; }
    return GG.num(bps / 1e3, 0) + ' kbit/s';
  }

  function fieldText(k, v) {
    if (typeof v !== 'number') { return k + ' ' + String(v); }
    for (var i = 0; i < UNITS.length; i++) {
      var suffix = UNITS[i][0];
      if (k.length > suffix.length && k.slice(-suffix.length) === suffix) {
        return k.slice(0, -suffix.length) + ' ' + GG.num(v, 1) + UNITS[i][1];
      }
    }
    if (/_bytes$/.test(k)) { return k.slice(0, -6) + ' ' + bytes(v); }
    return k + ' ' + GG.num(v, Math.abs(v) >= 100 ? 0 : 2);
  }

  // An access point: rates, clients, today's traffic and counter resets, not raw counters.
  function values(latest, d) {
    var w = d && d.wifi;
    if (w) {
      var ev = w.counter_events || {};
      var resets = (ev.reset || 0) + (ev.gap || 0);
      return [t('ap_now', { rx: rate(w.rx_bps), tx: rate(w.tx_bps), n: w.clients === null || w.clients === undefined ? '–' : GG.num(w.clients, 0) }),
        el('small', { text: t('ap_today', { rx: bytes(w.rx_bytes_today), tx: bytes(w.tx_bytes_today), n: GG.num(w.distinct_clients_today, 0) })
          + (resets ? ' · ' + t('ap_resets', { n: GG.num(resets, 0) }) : '') })];
    }
    if (!latest || !latest.fields) { return '–'; }
    return Object.keys(latest.fields).sort().map(function (k) { return fieldText(k, latest.fields[k]); }).join(', ');
  }

  // Uptime over 24 h / 7 d / 30 d, and how much of each window the gateway could see.
  function uptimeCell(d) {
    var u = d.uptime_pct || {}, o = d.uptime_observed_pct || {};
    var text = pct(u['24h']) + ' / ' + pct(u['7d']) + ' / ' + pct(u['30d']);
    var partial = ['24h', '7d', '30d'].some(function (w) { return o[w] !== null && o[w] !== undefined && o[w] < 99.5; });
    return partial ? [text, el('small', { text: t('observed', { a: pct(o['24h']), b: pct(o['7d']), c: pct(o['30d']) }) })] : [text];
  }

  function render() {
    if (!signedIn) { return; }
    var listed = model.devices.filter(function (d) { return d.origin !== 'discovered'; }).sort(byTrouble);
    var discovered = model.devices.filter(function (d) { return d.origin === 'discovered'; });
    var tally = { online: 0, offline: 0, unmonitored: 0, unknown: 0 };
    listed.forEach(function (d) { tally[d.state] = (tally[d.state] || 0) + 1; });
    var parts = [t('dev_summary', { up: GG.num(tally.online, 0), total: GG.num(listed.length, 0) })];
    if (tally.offline) { parts.push(t('dev_down', { n: GG.num(tally.offline, 0) })); }
    if (tally.unmonitored) { parts.push(t('dev_unmonitored', { n: GG.num(tally.unmonitored, 0) })); }
    if (tally.unknown) { parts.push(t('dev_unknown', { n: GG.num(tally.unknown, 0) })); }
    $('devices-summary').textContent = parts.join(' · ');
    var only = $('state-filter').value;
    if (only === 'problem') { listed = listed.filter(function (d) { return d.state !== 'online'; }); }
    else if (only !== 'all') { listed = listed.filter(function (d) { return d.state === only; }); }
    renderBanners();
    fill($('devices').tBodies[0], listed.map(function (d) {
      var tr = el('tr', { 'data-device': d.id, 'data-state': d.state }, [
        cell([d.name || d.id, el('small', { text: d.id + ' · ' + d.kind + (d.zone ? ' · ' + d.zone : '') })]),
        cell(stateBadge(d.state)),
        cell([GG.ago(d.since_ns), el('small', { text: GG.when(d.since_ns) + (d.cause ? ' · ' + causeText(d.cause) : '') })]),
        cell([GG.ago(d.last_seen_ns), el('small', { text: GG.when(d.last_seen_ns) })]),
        cell(uptimeCell(d), 'num'),
        // Not online: what it last said is old, and says so (never shown as current).
        cell(d.state === 'online' || !d.latest ? values(d.latest, d)
          : [el('span', { 'class': 'old', text: t('old_values', { when: GG.when(d.latest.time_ns) }) }), ' ']
            .concat(values(d.latest, d)), d.state === 'online' ? '' : 'stale')
      ]);
      return tr;
    }), 6);

    fill($('discovered').tBodies[0], discovered.map(function (d) {
      var button = el('button', { type: 'button', 'class': 'btn small', text: t('forget'),
                                  'aria-label': t('forget_label', { id: d.id }), 'data-forget': d.id });
      button.addEventListener('click', function () { forget(d.id, button); });
      return el('tr', { 'data-device': d.id, 'data-state': d.state }, [
        cell([d.id, el('small', { text: (d.kind || '–') + ' · ' + d.site })]),
        cell(stateBadge(d.state)),
        cell([GG.ago(d.since_ns), el('small', { text: GG.when(d.since_ns) + (d.cause ? ' · ' + d.cause : '') })]),
        cell([GG.ago(d.last_seen_ns), el('small', { text: GG.when(d.last_seen_ns) })]),
        cell(button)
      ]);
    }), 5);
    var count = $('discovered-count');
    count.hidden = model.discoveredTotal <= discovered.length;
    count.textContent = t('discovered_count', { n: GG.num(discovered.length, 0), total: GG.num(model.discoveredTotal, 0) });

    fill($('outages').tBodies[0], model.outages.map(function (o) {
      return el('tr', { 'data-ongoing': String(!!o.ongoing) }, [
        cell(o.device), cell(GG.when(o.start_ns)), cell(o.ongoing ? t('ongoing') : GG.when(o.end_ns)),
        // An ongoing outage's length moves on with the page's clock (render runs every 5 s).
        cell(GG.duration(o.ongoing ? Math.max(o.duration_s || 0, (GG.serverNowMs() - o.start_ns / 1e6) / 1000) : o.duration_s), 'num'),
        cell(causeText(o.cause) + (o.end_cause ? ' → ' + causeText(o.end_cause) : ''))
      ]);
    }), 5);

    fill($('dead').tBodies[0], model.dead.map(function (d) {
      return el('tr', null, [
        cell(GG.when(d.at_ns)), cell([d.source || '–', el('small', { text: d.topic || '' })]), cell(d.kind || '–'),
        cell(d.error || '–'), cell(el('code', { text: String(d.payload || '').slice(0, 160) }))
      ]);
    }), 5);

    fill($('quarantine').tBodies[0], model.quarantine.map(function (q) {
      return el('tr', null, [
        cell(GG.when(q.at_ns)), cell(String(q.status), 'num'), cell(q.reason || '–'),
        cell(el('code', { text: String(q.line || '').slice(0, 200) }))
      ]);
    }), 4);

    renderSummary();
  }

  function renderSummary() {
    var s = model.status;
    var dl = $('summary');
    dl.textContent = '';
    if (!s) { return; }
    function row(label, value, detail) {
      dl.appendChild(el('dt', { text: label }));
      dl.appendChild(el('dd', null, detail ? [value, el('small', { text: detail })] : [value]));
    }
    var g = s.gateway || {}, m = s.mqtt || {}, i = s.influx || {}, sp = s.spool || {}, c = s.counts || {};
    $('gw').textContent = (g.id || '') + (g.site ? ' · ' + g.site : '');
    row(t('s_gateway'), (g.id || '–') + ' · ' + (g.site || '–'),
      (g.version ? 'v' + g.version + ' · ' : '') + t('uptime_for', { d: GG.duration(g.uptime_s) }));
    row(t('s_mqtt'), (m.state || '–') + ' (' + t(m.connected ? 'yes' : 'no') + ')', m.last_error || '');
    row(t('s_influx'), (i.state || '–') + ' (' + t(i.connected ? 'yes' : 'no') + ')', i.last_error || '');
    var share = sp.max_bytes ? ' (' + GG.num(100 * sp.bytes / sp.max_bytes, 1) + ' %)' : '';
    row(t('s_spool'), GG.num(sp.rows, 0) + ' ' + t('rows') + ' · ' + GG.num((sp.bytes || 0) / 1024, 1) + ' KiB' + share);
    row(t('s_oldest'), sp.oldest_unsent_age_s === null || sp.oldest_unsent_age_s === undefined ? '–' : GG.duration(sp.oldest_unsent_age_s));
    row(t('s_counts'), [c.received, c.readings, c.rejected, c.written].map(function (v) { return GG.num(v, 0); }).join(' / '));
    row(t('s_tables'), GG.num(sp.dead_letter_rows, 0) + ' / ' + GG.num(sp.quarantine_rows, 0));
    if (c.evicted) { row(t('s_evicted'), GG.num(c.evicted, 0)); }
    var dk = s.disk || {};
    if (dk.state) {
      row(t('s_disk'), t('disk_' + dk.state) + ' · ' + bytes(dk.free_bytes) + ' ' + t('free'));
    }
    renderDisk(dk);
    renderPolders();
  }

  // The card's trouble, in words a technician acts on; each damaged file set aside at start
  // stays listed until someone acknowledges it.
  function renderDisk(dk) {
    var section = $('disk-section'), notices = dk.notices || [];
    var bad = dk.state && dk.state !== 'ok';
    section.hidden = !bad && !notices.length;
    section.className = 'card disk' + (dk.state === 'low' ? ' low' : '');
    var failing = dk.failing || {}, first = Object.keys(failing)[0];
    var text = '';
    if (dk.state === 'low') {
      text = t('disk_low_text', { free: bytes(dk.free_bytes), reserve: bytes(dk.min_free_bytes) });
    } else if (dk.state === 'disk_full') {
      text = t('disk_full_text', { free: bytes(dk.free_bytes) });
    } else if (dk.state === 'io_error') {
      text = t('disk_io_text', { error: first ? first + ': ' + failing[first].error : '' });
    }
    $('disk-state').textContent = text;
    var list = $('disk-notices');
    list.textContent = '';
    notices.forEach(function (n) {
      var button = el('button', { type: 'button', 'class': 'btn', text: t('acknowledge') });
      button.addEventListener('click', function () { acknowledge(n.id, button); });
      list.appendChild(el('li', null, [t('notice', {
        file: n.file, detail: n.detail, aside: n.set_aside_as || '–', salvaged: GG.num(n.salvaged, 0),
        lost: n.lost === null || n.lost === undefined ? t('unknown_n') : GG.num(n.lost, 0)
      }), button]));
    });
  }

  // Each polder: its warning level, the level and how it moves, whether the sensor is
  // believed, and its siren with what an operator may do with it.
  function renderPolders() {
    var list = $('polders');
    $('polder-section').hidden = !model.polders.length;
    list.textContent = '';
    model.polders.forEach(function (p) {
      var parts = [el('strong', { text: p.name + ': ' }),
        el('span', { 'class': 'badge', 'data-level': p.alert_level, text: t('lv_' + p.alert_level) }), ' '];
      if (p.level !== null && p.level !== undefined) { parts.push(GG.num(p.level) + ' ' + p.unit + ' · '); }
      parts.push(t('q_' + p.quality) === 'q_' + p.quality ? p.quality : t('q_' + p.quality));
      if (p.trend_per_h > 0) { parts.push(' · ' + t('p_trend', { r: GG.num(p.trend_per_h), u: p.unit })); }
      if (p.eta_next_s) {
        parts.push(' · ' + t('p_eta', { lv: t('lv_' + p.next_level), m: GG.num(p.eta_next_s / 60, 0),
          lo: GG.num((p.eta_low_s || p.eta_next_s) / 60, 0), hi: p.eta_high_s ? GG.num(p.eta_high_s / 60, 0) : '?' }));
      }
      var item = el('li', { 'data-polder': p.id }, parts);
      var sd = p.siren_detail;
      if (sd) {
        var word = sd.state === 'silenced' ? t('sr_silenced', { when: GG.when(sd.until_ns) }) : t('sr_' + sd.state);
        if (sd.last_error) { word += ' · ' + t('sr_error', { e: sd.last_error }); }
        var row = el('p', { 'class': 'siren' }, [t('siren') + ': ', el('strong', { 'class': 'siren-state', text: word })]);
        [['silence', { action: 'silence', for_s: 3600 }], ['resume', { action: 'resume' }], ['test', { action: 'test' }]]
          .forEach(function (c) {
            var b = el('button', { type: 'button', 'class': 'btn', 'data-action': c[1].action, text: t(c[0]) });
            b.addEventListener('click', function () { sirenCommand(p.id, c[1], b); });
            row.appendChild(b);
          });
        item.appendChild(row);
      }
      list.appendChild(item);
    });
  }

  function sirenCommand(id, body, button) {
    button.disabled = true;
    $('polder-error').textContent = '';
    fetch('/api/v1/polder/' + encodeURIComponent(id) + '/siren', {
      method: 'POST', credentials: 'same-origin',
      headers: { Accept: 'application/json', 'Content-Type': 'application/json' }, body: JSON.stringify(body)
    }).then(function (r) {
      button.disabled = false;
      if (r.status === 401) { showLogin(); return; }
      if (!r.ok) { $('polder-error').textContent = t('siren_failed', { why: 'HTTP ' + r.status }); return; }
      refresh();
      // The siren switches a moment after the command (a Modbus write, a GPIO line): look
      // again, or a resumed siren would show "off" until the next half-minute refresh.
      refreshSoon();
    }, function () {
      button.disabled = false;
      $('polder-error').textContent = t('siren_failed', { why: t('unreachable') });
    });
  }

  function acknowledge(id, button) {
    button.disabled = true;
    $('disk-error').textContent = '';
    fetch('/api/v1/disk/notices/' + encodeURIComponent(id) + '/acknowledge', {
      method: 'POST', credentials: 'same-origin', headers: { Accept: 'application/json' }
    }).then(function (r) {
      if (r.status === 401) { showLogin(); return; }
      if (!r.ok) {
        button.disabled = false;
        $('disk-error').textContent = t('ack_failed', { why: 'HTTP ' + r.status });
        return;
      }
      refresh();
    }, function () {
      button.disabled = false;
      $('disk-error').textContent = t('ack_failed', { why: t('unreachable') });
    });
  }

  function numericFields(d) {
    var f = (d && d.latest && d.latest.fields) || {};
    return Object.keys(f).filter(function (k) { return typeof f[k] === 'number'; }).sort();
  }

  function setOptions(select, values, keep) {
    var same = select.options.length === values.length &&
      values.every(function (v, i) { return select.options[i].value === v; });
    if (same) { return; }
    select.textContent = '';
    values.forEach(function (v) { select.appendChild(el('option', { value: v, text: v })); });
    if (values.indexOf(keep) >= 0) { select.value = keep; }
  }

  function fillChartSelects() {
    var dev = $('chart-device'), field = $('chart-field');
    var before = dev.value + '|' + field.value;
    var withFields = model.devices.filter(function (d) { return numericFields(d).length; });
    setOptions(dev, withFields.map(function (d) { return d.id; }), dev.value);
    setOptions(field, numericFields(find(dev.value)), field.value);
    if (dev.value + '|' + field.value !== before) { drawChart(); }
  }

  function drawChart() {
    var device = $('chart-device').value, field = $('chart-field').value, range = $('chart-range').value;
    var box = $('chart-op');
    if (!device || !field) { window.GGChart.draw(box, [], { empty: t('chart_empty') }); return; }
    GG.getJSON('/api/v1/history?device=' + encodeURIComponent(device) + '&field=' + encodeURIComponent(field) +
               '&range=' + encodeURIComponent(range))
      .then(function (h) {
        if ($('chart-device').value !== device || $('chart-field').value !== field) { return; }
        window.GGChart.draw(box, h.points, {
          label: device + ' ' + field, stepS: h.step_s, locale: GG.locale(), empty: t('chart_empty'),
          fmt: function (v) { return GG.num(v, 2); }
        });
      })
      .catch(function (e) { if (e.status === 401) { showLogin(); } else { box.textContent = String(e.message); } });
  }

  function login(ev) {
    ev.preventDefault();
    var token = $('token').value;
    $('login-error').textContent = '';
    fetch('/api/v1/session', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token: token })
    }).then(function (r) {
      if (r.ok) { $('token').value = ''; showApp(); return; }
      $('login-error').textContent = r.status === 401 || r.status === 403 ? t('wrong_token') : t('unreachable') + ' (HTTP ' + r.status + ')';
      $('token').select();
    }, function () { $('login-error').textContent = t('unreachable'); });
  }

  function logout() {
    fetch('/api/v1/session', { method: 'DELETE', credentials: 'same-origin' })
      .then(function () { showLogin(); }, function () { showLogin(); });
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('lang').addEventListener('click', function () { GG.setLang(GG.lang() === 'id' ? 'en' : 'id'); });
    GG.onLang(function () { render(); if (signedIn) { drawChart(); } });
    GG.setLang(GG.lang());
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('chart-device').addEventListener('change', function () { fillChartSelects(); drawChart(); });
    $('chart-field').addEventListener('change', drawChart);
    $('chart-range').addEventListener('change', drawChart);
    $('state-filter').addEventListener('change', render);
    setInterval(function () { if (signedIn) { render(); } }, 5000); // the "… ago" texts move on
    GG.getJSON('/api/v1/session').then(showApp, function (e) {
      showLogin(e.status === 401 ? '' : t('unreachable'));
    });
  });
})();
