/* The regency's operators' page: every park, its outages, the monthly uptime report. The token
   stays in this page's memory only and goes as a bearer header. */
(function () {
  'use strict';
  var GG = window.GG, t = GG.t, el = GG.el;

  GG.add({
    id: {
      skip: 'Langsung ke isi', title: 'Petugas Kabupaten', login_title: 'Masuk sebagai petugas',
      token_label: 'Token operator', login: 'Masuk', wrong_token: 'Token salah. Periksa dan coba lagi.',
      parks_title: 'Taman', park: 'Taman', state: 'Status', since: 'Sejak', devices: 'Perangkat',
      outages_open: 'Gangguan terbuka', polder: 'Polder', outages_title: 'Gangguan taman',
      report_title: 'Laporan uptime bulanan', month: 'Bulan', show: 'Tampilkan', csv: 'Unduh CSV',
      device: 'Perangkat', uptime: 'Uptime', down: 'Mati', unobserved: 'Tidak teramati',
      st_up: 'Terpantau', st_down: 'Gateway mati', st_link_down: 'Koneksi terputus', st_stale: 'Data lama',
      st_unknown: 'Belum ada data', summary: '{up} dari {total} taman terpantau · {down} bermasalah',
      dev_line: '{up}/{total} menyala · {down} mati · {unmon} tidak terpantau', park_itself: '(taman)',
      outage: '{site}: mati {start} – {end} ({dur})', ongoing: 'masih berlangsung', none: 'Tidak ada.',
      open_page: 'halaman taman', load_failed: 'Sebagian data gagal dimuat.'
    },
    en: {
      skip: 'Skip to content', title: 'Regency operators', login_title: 'Sign in as an operator',
      token_label: 'Operator token', login: 'Sign in', wrong_token: 'Wrong token. Check it and try again.',
      parks_title: 'Parks', park: 'Park', state: 'State', since: 'Since', devices: 'Devices',
      outages_open: 'Open outages', polder: 'Polder', outages_title: 'Park outages',
      report_title: 'Monthly uptime report', month: 'Month', show: 'Show', csv: 'Download CSV',
      device: 'Device', uptime: 'Uptime', down: 'Down', unobserved: 'Unobserved',
      st_up: 'Monitored', st_down: 'Gateway down', st_link_down: 'Link down', st_stale: 'Old data',
      st_unknown: 'No data yet', summary: '{up} of {total} parks monitored · {down} in trouble',
      dev_line: '{up}/{total} on · {down} down · {unmon} unmonitored', park_itself: '(park)',
      outage: '{site}: down {start} – {end} ({dur})', ongoing: 'ongoing', none: 'None.',
      open_page: "park's page", load_failed: 'Some data could not be loaded.'
    }
  });

  var $ = function (id) { return document.getElementById(id); };
  var token = null, about = { park_url: '' }, parks = [], details = {}, outages = [], report = [];

  function api(path) {
    return fetch(path, { headers: { Accept: 'application/json', Authorization: 'Bearer ' + token } })
      .then(function (r) {
        if (r.status === 401) { var e = new Error('401'); e.status = 401; throw e; }
        if (!r.ok) { throw new Error(path + ': HTTP ' + r.status); }
        return r;
      });
  }

  function tally(summary) {
    var n = { up: 0, total: 0, down: 0, unmon: 0 };
    Object.keys((summary && summary.devices) || {}).forEach(function (k) {
      var d = summary.devices[k];
      n.up += d.up; n.total += d.total; n.down += d.down; n.unmon += d.unmonitored || 0;
    });
    return n;
  }

  function render() {
    var tbody = $('parks').querySelector('tbody');
    tbody.textContent = '';
    var up = 0;
    parks.forEach(function (p) {
      if (p.state === 'up') { up += 1; }
      var s = (details[p.site] || {}).summary || {};
      var n = tally(s);
      var name = [p.site];
      if (about.park_url) {
        name = [p.site, ' ', el('a', { href: about.park_url.replace('{site}', encodeURIComponent(p.site)),
          text: t('open_page') })];
      }
      var polder = (p.polder || []).map(function (x) {
        return (x.name || '') + ' ' + (x.level === null || x.level === undefined ? '–' : GG.num(x.level, 2) + ' ' + x.unit) +
          ' (' + x.alert_level + ')';
      }).join(', ');
      var row = el('tr', { 'data-site': p.site, 'data-state': p.state }, [
        el('td', { 'data-label': t('park') }, name),
        el('td', { 'data-label': t('state'), text: t('st_' + p.state) }),
        el('td', { 'data-label': t('since'), text: p.since_ns ? GG.when(p.since_ns) + ' (' + GG.ago(p.since_ns) + ')' : '–' }),
        el('td', { 'data-label': t('devices'), text: t('dev_line', n) }),
        el('td', { 'data-label': t('outages_open'), text: String(s.outages_open === undefined ? '–' : s.outages_open) }),
        el('td', { 'data-label': t('polder'), text: polder || '–' })
      ]);
      tbody.appendChild(row);
    });
    $('parks-summary').textContent = t('summary', { up: up, total: parks.length, down: parks.length - up });
    var list = $('outages');
    list.textContent = '';
    if (!outages.length) { list.appendChild(el('li', { text: t('none') })); }
    outages.forEach(function (o) {
      list.appendChild(el('li', { 'data-site': o.site, text: t('outage', { site: o.site, start: GG.when(o.start_ns),
        end: o.ongoing ? t('ongoing') : GG.when(o.end_ns), dur: GG.duration(o.duration_s) }) }));
    });
    var rtbody = $('report').querySelector('tbody');
    rtbody.textContent = '';
    report.forEach(function (r) {
      rtbody.appendChild(el('tr', { 'data-site': r.site, 'data-device': r.device || '' }, [
        el('td', { 'data-label': t('park'), text: r.site }),
        el('td', { 'data-label': t('device'), text: r.device || t('park_itself') }),
        el('td', { 'data-label': t('uptime'), text: r.uptime_pct === null ? '–' : GG.num(r.uptime_pct, 2) + ' %' }),
        el('td', { 'data-label': t('down'), text: GG.duration(r.down_s) }),
        el('td', { 'data-label': t('unobserved'), text: GG.duration(r.unobserved_s) })
      ]));
    });
  }

  function refresh() {
    return Promise.all([
      api('/api/v1/regency').then(function (r) { return r.json(); }),
      api('/api/v1/parks').then(function (r) { return r.json(); }),
      api('/api/v1/outages').then(function (r) { return r.json(); })
    ]).then(function (got) {
      about = got[0]; parks = got[1]; outages = got[2];
      return Promise.all(parks.map(function (p) {
        return api('/api/v1/parks/' + encodeURIComponent(p.site)).then(function (r) { return r.json(); })
          .then(function (d) { details[p.site] = d; });
      }));
    }).then(function () {
      $('app-error').hidden = true;
      render();
    }).catch(function (e) {
      if (e.status === 401) { signOut(t('wrong_token')); return; }
      $('app-error').hidden = false;
      $('app-error').textContent = t('load_failed');
    });
  }

  function loadReport(ev) {
    if (ev) { ev.preventDefault(); }
    api('/api/v1/report?month=' + encodeURIComponent($('month').value)).then(function (r) { return r.json(); })
      .then(function (rows) { report = rows; render(); })
      .catch(function () { $('app-error').hidden = false; $('app-error').textContent = t('load_failed'); });
  }

  function downloadCsv() {
    var month = $('month').value;
    api('/api/v1/report?format=csv&month=' + encodeURIComponent(month)).then(function (r) { return r.blob(); })
      .then(function (blob) {
        var a = el('a', { href: URL.createObjectURL(blob), download: 'uptime-' + month + '.csv' });
        document.body.appendChild(a);
        a.click();
        a.remove();
      });
  }

  function signOut(message) {
    token = null;
    $('app').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
  }

  function signIn(ev) {
    ev.preventDefault();
    token = $('token').value;
    $('token').value = '';
    $('login').hidden = true;
    $('app').hidden = false;
    refresh();
    loadReport();
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('lang').addEventListener('click', function () { GG.setLang(GG.lang() === 'id' ? 'en' : 'id'); });
    GG.onLang(render);
    GG.setLang(GG.lang());
    var now = new Date(Date.now() + 8 * 3600e3);  // this month in WITA
    $('month').value = now.toISOString().slice(0, 7);
    $('login-form').addEventListener('submit', signIn);
    $('report-form').addEventListener('submit', loadReport);
    $('csv').addEventListener('click', downloadCsv);
    setInterval(function () { if (token) { refresh(); } }, 15000);
  });
})();
