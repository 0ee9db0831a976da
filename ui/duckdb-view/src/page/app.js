// The view's page: SQL editor, catalog, result grid, CSV download, cancel.
// Plain JavaScript, no dependencies, nothing loaded from elsewhere: the
// machines the view runs on have no internet. Talks only to this origin's
// API (relative URLs, so the page also works under a path prefix).
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const sqlBox = $('sql');
  const runButton = $('run');
  const cancelButton = $('cancel');
  const downloadButton = $('download');
  const statusLine = $('status');
  const grid = $('grid');
  const empty = $('empty');
  const errorBox = $('error');
  const STORAGE_KEY = 'duckdb-view:sql';

  let running = null; // { id, kind: 'query' | 'download', started, timer }

  // ---- helpers -------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child != null) node.append(child);
    }
    return node;
  }

  function newQueryId() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return 'q-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function formatSeconds(seconds) {
    if (seconds < 1) return (seconds * 1000).toFixed(0) + ' ms';
    if (seconds < 60) return seconds.toFixed(2) + ' s';
    const minutes = Math.floor(seconds / 60);
    return minutes + ' min ' + (seconds - minutes * 60).toFixed(0) + ' s';
  }

  // An error body is {error, message}; anything else (a proxy's HTML page)
  // is shown as text.
  async function readError(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      if (body && typeof body.message === 'string') {
        return { code: body.error || String(response.status), message: body.message };
      }
    } catch (_) { /* not JSON */ }
    return { code: 'HTTP ' + response.status, message: text.slice(0, 2000) || response.statusText };
  }

  const TITLES = {
    sql_error: 'SQL error',
    forbidden: 'Not allowed in this view',
    statement_refused: 'Statement refused in this view',
    cancelled: 'Cancelled',
    timeout: 'Timed out',
    out_of_memory: 'Out of memory',
    upstream_error: 'Data lake unavailable',
    too_many_queries: 'Busy',
    view_starting: 'The view is starting',
    invalid_request: 'Invalid request',
  };

  function showError(error) {
    $('error-title').textContent = TITLES[error.code] || 'Error (' + error.code + ')';
    $('error-message').textContent = error.message;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    $('error-message').textContent = '';
  }

  function setStatus(text, warn) {
    statusLine.textContent = '';
    statusLine.append(warn ? el('span', { class: 'warn', text }) : text);
  }

  // The SQL to run: the selection if there is one, else everything.
  function currentSql() {
    const { selectionStart, selectionEnd, value } = sqlBox;
    const selected = value.slice(selectionStart, selectionEnd);
    return selected.trim() ? selected : value;
  }

  function setRunning(state) {
    running = state;
    runButton.disabled = !!state;
    downloadButton.disabled = !!state;
    cancelButton.disabled = !state;
    if (state) {
      const tick = () => {
        if (running !== state) return;
        const seconds = (performance.now() - state.started) / 1000;
        const what = state.kind === 'download' ? 'Preparing CSV' : 'Running';
        setStatus(what + '… ' + formatSeconds(seconds) + (state.progress != null ? ' · ' + state.progress.toFixed(0) + '%' : ''));
      };
      tick();
      state.timer = setInterval(() => { tick(); pollProgress(state); }, 500);
    }
  }

  function endRunning(state) {
    if (state && state.timer) clearInterval(state.timer);
    if (running === state) setRunning(null);
  }

  async function pollProgress(state) {
    try {
      const response = await fetch('api/queries', { cache: 'no-store' });
      if (!response.ok) return;
      const body = await response.json();
      const mine = (body.queries || []).find((q) => q.id === state.id);
      if (mine && typeof mine.progress === 'number') state.progress = mine.progress;
    } catch (_) { /* progress is best effort */ }
  }

  // ---- the result grid -------------------------------------------------------

  const NUMERIC = /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL)/;

  function renderResult(result) {
    grid.textContent = '';
    const numeric = result.columns.map((c) => NUMERIC.test(c.type));
    const head = el('tr', {}, el('th', { class: 'rownum', text: '#' }));
    result.columns.forEach((column, i) => {
      head.append(el('th', { class: numeric[i] ? 'num' : '', title: column.name + ' ' + column.type },
        column.name, el('span', { class: 'type', text: column.type })));
    });
    grid.append(el('thead', {}, head));
    const body = document.createDocumentFragment();
    result.rows.forEach((row, r) => {
      const tr = el('tr', {}, el('td', { class: 'rownum', text: String(r + 1) }));
      row.forEach((value, i) => {
        if (value === null) {
          tr.append(el('td', { class: 'null', text: 'NULL' }));
        } else {
          const text = typeof value === 'string' ? value : JSON.stringify(value);
          tr.append(el('td', { class: numeric[i] ? 'num' : '', title: text.length > 60 ? text.slice(0, 2000) : '', text }));
        }
      });
      body.append(tr);
    });
    grid.append(el('tbody', {}, body));
    empty.hidden = result.columns.length > 0;
    if (!result.columns.length) empty.textContent = 'The statement ran; it returns no columns.';

    let text = result.rowCount + (result.rowCount === 1 ? ' row' : ' rows') + ' · ' + formatSeconds(result.elapsed);
    if (result.truncated) {
      setStatus(text + ' · showing the first ' + result.rowCount + ' rows; Download CSV has them all', true);
    } else {
      setStatus(text);
    }
  }

  // ---- actions ---------------------------------------------------------------

  async function run() {
    if (running) return;
    const sql = currentSql();
    if (!sql.trim()) {
      showError({ code: 'invalid_request', message: 'Write a query first.' });
      return;
    }
    clearError();
    const state = { id: newQueryId(), kind: 'query', started: performance.now() };
    setRunning(state);
    try {
      const response = await fetch('api/query', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ sql, queryId: state.id }),
      });
      if (!response.ok) {
        const error = await readError(response);
        showError(error);
        setStatus(error.code === 'cancelled' ? 'Cancelled.' : 'Failed.');
        return;
      }
      renderResult(await response.json());
    } catch (error) {
      showError({ code: 'network', message: 'The view did not answer: ' + error.message });
      setStatus('Failed.');
    } finally {
      endRunning(state);
    }
  }

  async function download() {
    if (running) return;
    const sql = currentSql();
    if (!sql.trim()) return;
    clearError();
    const state = { id: newQueryId(), kind: 'download', started: performance.now() };
    setRunning(state);
    try {
      const response = await fetch('api/query?format=csv', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ sql, queryId: state.id }),
      });
      if (!response.ok) {
        showError(await readError(response));
        setStatus('Download failed.');
        return;
      }
      const blob = await response.blob();
      const disposition = response.headers.get('Content-Disposition') || '';
      const match = /filename="([^"]+)"/.exec(disposition);
      const url = URL.createObjectURL(blob);
      const link = el('a', { href: url, download: match ? match[1] : 'result.csv' });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      setStatus('Downloaded ' + (match ? match[1] : 'result.csv') + ' (' + blob.size.toLocaleString() + ' bytes) · ' +
        formatSeconds((performance.now() - state.started) / 1000));
    } catch (error) {
      showError({ code: 'network', message: 'The download failed: ' + error.message });
      setStatus('Download failed.');
    } finally {
      endRunning(state);
    }
  }

  async function cancel() {
    if (!running) return;
    cancelButton.disabled = true;
    try {
      await fetch('api/cancel', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ queryId: running.id }),
      });
    } catch (_) { /* the query's own response reports the outcome */ }
  }

  // ---- catalog ---------------------------------------------------------------

  function insertSql(text) {
    sqlBox.value = text;
    sqlBox.focus();
    sqlBox.setSelectionRange(text.length, text.length);
    saveSql();
  }

  function quoteIdent(name) {
    return /^[a-z_][a-z0-9_]*$/.test(name) ? name : '"' + name.replace(/"/g, '""') + '"';
  }

  function columnList(columns) {
    return el('ul', {}, ...columns.map((c) =>
      el('li', {}, el('span', { text: c.name }), el('span', { class: 'type', text: c.type }))));
  }

  function tableEntry(table) {
    const name = el('button', {
      type: 'button',
      title: 'Query ' + table.name + (table.source ? ' (' + table.source + ')' : ''),
      text: table.name,
      onclick: (event) => {
        event.preventDefault();
        insertSql('SELECT * FROM ' + quoteIdent(table.name) + ' LIMIT 100;');
      },
    });
    const summary = el('summary', {}, name);
    if (table.error) summary.append(' ', el('span', { class: 'unavailable', text: '(unavailable)' }));
    const details = el('details', { 'data-table': table.name }, summary);
    if (table.error) details.append(el('div', { class: 'unavailable', text: 'Unavailable: ' + table.error }));
    else details.append(columnList(table.columns || []));
    return details;
  }

  function renderCatalog(catalog) {
    const root = $('catalog');
    root.textContent = '';
    $('view-name').textContent = catalog.view;
    document.title = catalog.view + ' · DuckDB view';
    $('engine').textContent = catalog.engine;

    root.append(el('h3', { text: 'Tables' }));
    if (catalog.tables.length) catalog.tables.forEach((t) => root.append(tableEntry(t)));
    else root.append(el('p', { class: 'muted', text: 'No named tables; query the prefixes below.' }));

    root.append(el('h3', { text: 'Prefixes' }));
    for (const subset of catalog.subsets) {
      for (const prefix of subset.prefixes) {
        root.append(el('button', {
          type: 'button', class: 'prefix', text: prefix + (subset.write ? ' (read/write)' : ''),
          title: 'List the objects under ' + prefix,
          onclick: () => insertSql("SELECT * FROM glob('" + prefix.replace(/'/g, "''") + "**') LIMIT 100;"),
        }));
      }
    }

    if (catalog.workspace.length) {
      root.append(el('h3', { text: 'Workspace' }));
      catalog.workspace.forEach((o) => root.append(tableEntry({ name: o.name, columns: o.columns })));
    }
  }

  async function loadCatalog() {
    const pill = $('connection');
    try {
      const response = await fetch('api/catalog', { cache: 'no-store' });
      if (response.status === 503) {
        pill.dataset.state = 'starting';
        pill.textContent = 'starting…';
        setTimeout(loadCatalog, 1000);
        return;
      }
      if (!response.ok) throw new Error((await readError(response)).message);
      renderCatalog(await response.json());
      pill.dataset.state = 'ready';
      pill.textContent = 'ready';
    } catch (error) {
      pill.dataset.state = 'error';
      pill.textContent = 'unreachable';
      $('catalog').textContent = 'The catalog could not be loaded: ' + error.message;
    }
  }

  // ---- editor ----------------------------------------------------------------

  function saveSql() {
    try { localStorage.setItem(STORAGE_KEY, sqlBox.value); } catch (_) { /* private mode */ }
  }

  sqlBox.addEventListener('keydown', (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === 'Enter') {
      event.preventDefault();
      run();
    } else if (event.key === 'Tab' && !event.shiftKey && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      sqlBox.setRangeText('  ', sqlBox.selectionStart, sqlBox.selectionEnd, 'end');
      saveSql();
    }
  });
  sqlBox.addEventListener('input', saveSql);
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && running) cancel();
  });
  runButton.addEventListener('click', run);
  cancelButton.addEventListener('click', cancel);
  downloadButton.addEventListener('click', download);
  $('refresh-catalog').addEventListener('click', loadCatalog);

  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved) sqlBox.value = saved;
  } catch (_) { /* private mode */ }
  loadCatalog();
})();
