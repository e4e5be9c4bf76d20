/* /docs: the OpenAPI schema of this gateway, read from /openapi.json and laid out as a page.
   Served by the gateway itself (parks have no internet; the CSP allows only its own files). */
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === 'text') { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return node;
  }

  function typeOf(schema, spec) {
    if (!schema) { return ''; }
    if (schema.$ref) { return schema.$ref.split('/').pop(); }
    if (schema.anyOf) { return schema.anyOf.map(function (s) { return typeOf(s, spec); }).join(' | '); }
    if (schema.type === 'array') { return typeOf(schema.items, spec) + '[]'; }
    if (schema.enum) { return schema.enum.join(' | '); }
    return schema.type || '';
  }

  function table(head, rows) {
    return el('table', {}, [
      el('thead', {}, [el('tr', {}, head.map(function (h) { return el('th', { scope: 'col', text: h }); }))]),
      el('tbody', {}, rows.map(function (r) {
        return el('tr', {}, r.map(function (c) { return el('td', { text: c }); }));
      }))
    ]);
  }

  function operation(path, method, op, spec) {
    var id = (op.operationId || method + path).replace(/[^A-Za-z0-9_-]/g, '_');
    var parts = [
      el('h3', { id: id }, [el('span', { 'class': 'method ' + method, text: method.toUpperCase() }), path]),
      el('p', { text: op.summary || '' })
    ];
    if (op.description) { parts.push(el('p', { 'class': 'desc', text: op.description })); }
    var params = (op.parameters || []).map(function (p) {
      return [p.name, p['in'], p.required ? 'yes' : 'no', typeOf(p.schema, spec), p.description || ''];
    });
    if (params.length) { parts.push(table(['parameter', 'in', 'required', 'type', 'what'], params)); }
    if (op.requestBody) {
      var content = op.requestBody.content || {};
      parts.push(el('p', { text: 'Body: ' + Object.keys(content).map(function (k) {
        return k + ' ' + typeOf(content[k].schema, spec);
      }).join(', ') }));
    }
    var answers = Object.keys(op.responses || {}).map(function (code) {
      var r = op.responses[code], content = r.content || {};
      var kinds = Object.keys(content).map(function (k) { return typeOf(content[k].schema, spec); });
      return [code, r.description || '', kinds.filter(Boolean).join(', ')];
    });
    parts.push(table(['answer', 'meaning', 'body'], answers));
    return el('section', { 'class': 'op', 'data-op': method.toUpperCase() + ' ' + path }, parts);
  }

  function render(spec) {
    var info = spec.info || {};
    $('api-title').textContent = (info.title || 'API') + ' ' + (info.version ? 'v' + info.version : '');
    $('api-summary').textContent = info.summary || '';
    var byTag = {};
    Object.keys(spec.paths || {}).forEach(function (path) {
      Object.keys(spec.paths[path]).forEach(function (method) {
        var op = spec.paths[path][method];
        var tag = (op.tags && op.tags[0]) || 'other';
        (byTag[tag] = byTag[tag] || []).push(operation(path, method, op, spec));
      });
    });
    var tags = (spec.tags || []).map(function (t) { return t.name; });
    Object.keys(byTag).forEach(function (t) { if (tags.indexOf(t) < 0) { tags.push(t); } });
    var about = {};
    (spec.tags || []).forEach(function (t) { about[t.name] = t.description || ''; });
    var box = $('api-operations'), toc = $('api-toc');
    tags.forEach(function (t) {
      if (!byTag[t]) { return; }
      toc.appendChild(el('li', {}, [el('a', { href: '#tag-' + t, text: t + ' (' + byTag[t].length + ')' })]));
      box.appendChild(el('section', { 'class': 'card', 'aria-labelledby': 'tag-' + t }, [
        el('h2', { id: 'tag-' + t, text: t }), el('p', { text: about[t] || '' })
      ].concat(byTag[t])));
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    fetch('/openapi.json', { headers: { Accept: 'application/json' } })
      .then(function (r) { if (!r.ok) { throw new Error('HTTP ' + r.status); } return r.json(); })
      .then(render)
      .catch(function (e) {
        $('api-error').textContent = 'The API schema could not be loaded: ' + e.message;
        $('api-error').hidden = false;
      });
  });
})();
