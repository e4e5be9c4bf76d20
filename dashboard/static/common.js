/* Shared by the resident and operator pages: language, formatting, fetch, the live indicator.
   Plain ES2017 (no ?. or ??, no object spread) so that old Android Chrome runs it. */
(function () {
  'use strict';
  var KEY = 'gg-lang';
  var dict = { id: {}, en: {} };
  var lang = 'id';
  var listeners = [];
  var clockOffsetMs = 0; // server clock minus this phone's clock: cheap phones drift

  try { if (localStorage.getItem(KEY) === 'en') { lang = 'en'; } } catch (e) { /* private mode */ }

  function add(strings) {
    ['id', 'en'].forEach(function (l) {
      Object.keys(strings[l] || {}).forEach(function (k) { dict[l][k] = strings[l][k]; });
    });
  }

  function t(key, vars) {
    var s = dict[lang][key];
    if (s === undefined) { s = dict.id[key]; }
    if (s === undefined) { return key; }
    if (vars) {
      s = s.replace(/\{(\w+)\}/g, function (m, name) {
        return vars[name] === undefined ? m : String(vars[name]);
      });
    }
    return s;
  }

  function applyStatic(root) {
    var nodes = (root || document).querySelectorAll('[data-t]');
    for (var i = 0; i < nodes.length; i++) { nodes[i].textContent = t(nodes[i].getAttribute('data-t')); }
    nodes = (root || document).querySelectorAll('[data-t-label]');
    for (var j = 0; j < nodes.length; j++) {
      nodes[j].setAttribute('aria-label', t(nodes[j].getAttribute('data-t-label')));
    }
  }

  function setLang(l) {
    lang = l === 'en' ? 'en' : 'id';
    try { localStorage.setItem(KEY, lang); } catch (e) { /* private mode */ }
    document.documentElement.lang = lang;
    applyStatic();
    var btn = document.getElementById('lang');
    if (btn) {
      // The button names the other language in that language.
      btn.textContent = lang === 'id' ? 'English' : 'Bahasa Indonesia';
      btn.lang = lang === 'id' ? 'en' : 'id';
    }
    listeners.forEach(function (f) { f(lang); });
  }

  function locale() { return lang === 'en' ? 'en-GB' : 'id-ID'; }

  function num(v, digits) {
    if (v === null || v === undefined || isNaN(v)) { return '–'; }
    var d = digits === undefined ? 1 : digits;
    return Number(v).toLocaleString(locale(), { maximumFractionDigits: d, minimumFractionDigits: 0 });
  }

  function serverNowMs() { return Date.now() + clockOffsetMs; }

  function syncClock(timeNs) {
    if (timeNs) { clockOffsetMs = timeNs / 1e6 - Date.now(); }
  }

  function ago(ns) {
    if (!ns) { return t('never'); }
    var s = Math.max(0, Math.round((serverNowMs() - ns / 1e6) / 1000));
    if (s < 10) { return t('just_now'); }
    var n, unit;
    if (s < 60) { n = s; unit = 's'; }
    else if (s < 3600) { n = Math.floor(s / 60); unit = 'm'; }
    else if (s < 86400) { n = Math.floor(s / 3600); unit = 'h'; }
    else { n = Math.floor(s / 86400); unit = 'd'; }
    return t('ago_' + unit + (n === 1 ? '1' : ''), { n: n });
  }

  function when(ns) {
    if (!ns) { return '–'; }
    return new Date(ns / 1e6).toLocaleString(locale(), {
      day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit'
    });
  }

  function duration(sec) {
    if (sec === null || sec === undefined) { return '–'; }
    var s = Math.round(sec);
    if (s < 60) { return s + ' ' + t('unit_s'); }
    if (s < 3600) { return Math.floor(s / 60) + ' ' + t('unit_m') + ' ' + (s % 60) + ' ' + t('unit_s'); }
    if (s < 86400) { return Math.floor(s / 3600) + ' ' + t('unit_h') + ' ' + Math.floor(s % 3600 / 60) + ' ' + t('unit_m'); }
    return Math.floor(s / 86400) + ' ' + t('unit_d') + ' ' + Math.floor(s % 86400 / 3600) + ' ' + t('unit_h');
  }

  function getJSON(url, opts) {
    return fetch(url, opts || { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) {
        if (!r.ok) { var e = new Error(url + ': HTTP ' + r.status); e.status = r.status; throw e; }
        return r.status === 204 ? null : r.json();
      });
  }

  /* EventSource reconnects by itself; this only keeps the small indicator truthful and calls
     back on every (re)open so that a page can fetch what it missed while away. */
  function live(handlers, onOpen) {
    var el = document.getElementById('live');
    function show(state) {
      if (!el) { return; }
      el.className = 'live ' + state;
      el.setAttribute('data-state', state);
      el.textContent = t('live_' + state);
    }
    show('connecting');
    onLang(function () { if (el) { show(el.getAttribute('data-state')); } });
    if (!window.EventSource) { show('off'); return null; }
    var es = new EventSource('/api/v1/events');
    heardMs = Date.now();
    es.addEventListener('ping', function () { heardMs = Date.now(); });
    es.onopen = function () { heardMs = Date.now(); show('on'); if (onOpen) { onOpen(); } };
    es.onerror = function () { show(es.readyState === 2 ? 'off' : 'connecting'); };
    Object.keys(handlers).forEach(function (name) {
      es.addEventListener(name, function (ev) {
        heardMs = Date.now();
        var data;
        try { data = JSON.parse(ev.data); } catch (e) { return; }
        handlers[name](data);
      });
    });
    return es;
  }

  // How long the live stream has been silent (no event, no ping), ms.
  var heardMs = Date.now();
  function liveSilentMs() { return Date.now() - heardMs; }

  function onLang(f) { listeners.push(f); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === 'text') { node.textContent = attrs[k]; }
        else if (k === 'class') { node.className = attrs[k]; }
        else { node.setAttribute(k, attrs[k]); }
      });
    }
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return node;
  }

  add({
    id: {
      never: 'belum pernah', just_now: 'baru saja',
      ago_s: '{n} detik lalu', ago_s1: '{n} detik lalu', ago_m: '{n} menit lalu', ago_m1: '{n} menit lalu',
      ago_h: '{n} jam lalu', ago_h1: '{n} jam lalu', ago_d: '{n} hari lalu', ago_d1: '{n} hari lalu',
      unit_s: 'dtk', unit_m: 'mnt', unit_h: 'jam', unit_d: 'hari',
      live_on: 'Langsung', live_connecting: 'Menyambung ulang…', live_off: 'Tidak langsung',
      no_data: 'Belum ada data', chart_empty: 'Belum ada data untuk grafik ini.'
    },
    en: {
      never: 'never', just_now: 'just now',
      ago_s: '{n} seconds ago', ago_s1: '1 second ago', ago_m: '{n} minutes ago', ago_m1: '1 minute ago',
      ago_h: '{n} hours ago', ago_h1: '1 hour ago', ago_d: '{n} days ago', ago_d1: '1 day ago',
      unit_s: 's', unit_m: 'min', unit_h: 'h', unit_d: 'd',
      live_on: 'Live', live_connecting: 'Reconnecting…', live_off: 'Not live',
      no_data: 'No data yet', chart_empty: 'No data for this chart yet.'
    }
  });

  window.GG = {
    add: add, t: t, setLang: setLang, lang: function () { return lang; }, locale: locale,
    applyStatic: applyStatic, onLang: onLang, num: num, ago: ago, when: when, duration: duration,
    getJSON: getJSON, live: live, liveSilentMs: liveSilentMs, syncClock: syncClock,
    serverNowMs: serverNowMs, el: el
  };
})();
