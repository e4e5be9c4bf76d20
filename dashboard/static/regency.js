/* The regency's public page: every park's Wi-Fi and polder, the worst first, phone first. */
(function () {
  'use strict';
  var GG = window.GG, t = GG.t, el = GG.el;

  GG.add({
    id: {
      skip: 'Langsung ke isi', title: 'Taman Kabupaten', updated: 'Diperbarui',
      footer: 'Data dari gateway setiap taman, diperbarui otomatis.',
      summary: '{up} dari {total} taman terpantau', error: 'Data belum bisa diambil. Mencoba lagi…',
      st_up: 'Terpantau', st_down: 'Gateway mati', st_link_down: 'Koneksi terputus',
      st_stale: 'Data lama', st_unknown: 'Belum ada data',
      wifi: 'Wi-Fi: {n} pengguna', wifi_none: 'Wi-Fi: –', devices: '{up} dari {total} perangkat menyala',
      lv_normal: 'Normal', lv_waspada: 'Waspada', lv_siaga: 'Siaga', lv_awas: 'Awas', lv_unknown: 'Belum ada data',
      heard: 'terakhir terdengar {when}', old_level: 'Data lama — terakhir {when}', never: 'belum pernah'
    },
    en: {
      skip: 'Skip to content', title: 'Regency Parks', updated: 'Updated',
      footer: "Data from each park's gateway, updated automatically.",
      summary: '{up} of {total} parks monitored', error: 'Could not get the data yet. Trying again…',
      st_up: 'Monitored', st_down: 'Gateway down', st_link_down: 'Link down',
      st_stale: 'Old data', st_unknown: 'No data yet',
      wifi: 'Wi-Fi: {n} people', wifi_none: 'Wi-Fi: –', devices: '{up} of {total} devices on',
      lv_normal: 'Normal', lv_waspada: 'Caution (Waspada)', lv_siaga: 'Warning (Siaga)', lv_awas: 'Danger (Awas)',
      lv_unknown: 'No data yet', heard: 'last heard {when}', old_level: 'Old data — last {when}', never: 'never'
    }
  });

  var $ = function (id) { return document.getElementById(id); };
  var parks = null, fetchedNs = null;

  function render() {
    if (!parks) { return; }
    var list = $('parks');
    list.textContent = '';
    var up = 0;
    parks.forEach(function (p) {
      if (p.state === 'up') { up += 1; }
      var heard = p.last_summary_ns ? GG.when(p.last_summary_ns) : t('never');
      var items = [el('h2', { text: p.site }),
        el('p', { 'class': 'status', 'data-level': p.state === 'up' ? 'online' : p.state === 'down' ? 'offline' : 'old' },
          [el('span', { 'class': 'word', text: t('st_' + p.state) })]),
        // Counts of a park not up are old too: not shown as if current.
        el('p', { 'class': 'sub', text: p.current
          ? (p.wifi && p.wifi.clients_now !== null ? t('wifi', { n: GG.num(p.wifi.clients_now, 0) })
            : t('wifi_none')) + ' · ' + t('devices', { up: p.devices_up, total: p.devices_total })
          : t('wifi_none') })];
      (p.polder || []).forEach(function (x) {
        var value = x.level === null || x.level === undefined ? '–'
          : GG.num(x.level, x.unit === 'm' ? 2 : 1) + ' ' + (x.unit || '');
        // A park not up: its level is an old one, said with its time, never as current.
        var level = p.current ? x.alert_level : 'old';
        var word = p.current ? t('lv_' + x.alert_level) : t('old_level', { when: heard });
        items.push(el('p', { 'class': 'status polder', 'data-level': level },
          [el('span', { 'class': 'word', text: (x.name || '') + ': ' + word + ' · ' + value })]));
      });
      items.push(el('p', { 'class': 'sub', text: t('heard', { when: heard }) }));
      list.appendChild(el('li', { 'class': 'card park', 'data-site': p.site, 'data-state': p.state }, items));
    });
    $('summary').textContent = t('summary', { up: up, total: parks.length });
    $('updated').textContent = fetchedNs ? GG.ago(fetchedNs) : '–';
  }

  function load() {
    GG.getJSON('/api/v1/parks').then(function (body) {
      parks = body;
      fetchedNs = Date.now() * 1e6;
      $('error').hidden = true;
      render();
    }, function () {
      $('error').hidden = false;
      $('error').textContent = t('error');
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('lang').addEventListener('click', function () { GG.setLang(GG.lang() === 'id' ? 'en' : 'id'); });
    GG.onLang(render);
    GG.setLang(GG.lang());
    load();
    setInterval(load, 15000);
  });
})();
