// The view's page: SQL editor, schema browser, query history, result grid
// and quick chart, CSV and Parquet downloads, cancel. Plain JavaScript, no
// dependencies, nothing loaded from elsewhere: the machines the view runs on
// have no internet. Talks only to this origin's API (relative URLs, so the
// page also works under a path prefix). The chart is drawn by chart.js.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const sqlBox = $('sql');
  const runButton = $('run');
  const cancelButton = $('cancel');
  const downloadButtons = { csv: $('download'), parquet: $('download-parquet') };
  const statusLine = $('status');
  const grid = $('grid');
  const empty = $('empty');
  const errorBox = $('error');
  const STORAGE_KEY = 'duckdb-view:sql';
  // localStorage is per origin, and every view has a host of its own; the
  // host in the key keeps histories apart under a path prefix too.
  const HISTORY_KEY = 'duckdb-view:history:' + location.host + location.pathname;
  const HISTORY_MAX = 100;
  const HISTORY_SQL_MAX = 20000;
  const FORMAT_NAMES = { csv: 'CSV', parquet: 'Parquet' };

  let running = null; // { id, kind: 'query' | 'csv' | 'parquet', started, timer }
  let lastResult = null;

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
    unsupported_type: 'Not possible in this format',
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
    for (const button of Object.values(downloadButtons)) button.disabled = !!state;
    cancelButton.disabled = !state;
    if (state) {
      const tick = () => {
        if (running !== state) return;
        const seconds = (performance.now() - state.started) / 1000;
        const what = state.kind === 'query' ? 'Running' : 'Preparing ' + FORMAT_NAMES[state.kind];
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

  // ---- tabs (WAI-ARIA tabs: arrows move between tabs) ------------------------

  function tabs(tablist, onChange) {
    const all = Array.from(tablist.querySelectorAll('[role="tab"]'));
    function select(tab, focus) {
      for (const t of all) {
        const on = t === tab;
        t.setAttribute('aria-selected', String(on));
        t.tabIndex = on ? 0 : -1;
        $(t.getAttribute('aria-controls')).hidden = !on;
      }
      if (focus) tab.focus();
      if (onChange) onChange(tab.id);
    }
    for (const tab of all) {
      tab.addEventListener('click', () => select(tab, false));
      tab.addEventListener('keydown', (event) => {
        const i = all.indexOf(tab);
        const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: all.length - 1 }[event.key];
        if (next === undefined) return;
        event.preventDefault();
        select(all[(next + all.length) % all.length], true);
      });
    }
    return (id) => select($(id), false);
  }

  const showSidePanel = tabs(document.querySelector('.side .tabs'), (id) => {
    if (id === 'tab-history') renderHistory();
  });
  const showResultPanel = tabs(document.querySelector('.result-tabs'), (id) => {
    if (id === 'tab-chart') drawChart();
  });

  // ---- the result grid -------------------------------------------------------

  function renderResult(result) {
    lastResult = result;
    grid.textContent = '';
    const numeric = ViewChart.columnKinds(result.columns);
    const head = el('tr', {}, el('th', { class: 'rownum', scope: 'col', text: '#' }));
    result.columns.forEach((column, i) => {
      head.append(el('th', { class: numeric[i] ? 'num' : '', scope: 'col', title: column.name + ' ' + column.type },
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

    const text = result.rowCount + (result.rowCount === 1 ? ' row' : ' rows') + ' · ' + formatSeconds(result.elapsed);
    if (result.truncated) {
      setStatus(text + ' · showing the first ' + result.rowCount + ' rows; the downloads have them all', true);
    } else {
      setStatus(text);
    }
    fillChartControls(result);
  }

  // ---- the quick chart -------------------------------------------------------

  const chartKind = $('chart-kind');
  const chartX = $('chart-x');
  const chartY = $('chart-y');

  // The axes a result offers: X any column (or the row number), Y a numeric
  // column. The first text column against the first numeric one by default.
  function fillChartControls(result) {
    const numeric = ViewChart.columnKinds(result.columns);
    chartX.textContent = '';
    chartY.textContent = '';
    chartX.append(el('option', { value: '-1', text: '(row number)' }));
    result.columns.forEach((c, i) => {
      chartX.append(el('option', { value: String(i), text: c.name + ' · ' + c.type }));
      if (numeric[i]) chartY.append(el('option', { value: String(i), text: c.name + ' · ' + c.type }));
    });
    const firstText = numeric.findIndex((n) => !n);
    let x = firstText;
    let y = numeric.indexOf(true);
    if (firstText < 0 && numeric.length > 1) {
      x = 0; // all numeric: the first column against the second
      y = 1;
    }
    chartX.value = String(x);
    if (y >= 0) chartY.value = String(y);
    if (!$('chart-panel').hidden) drawChart();
  }

  function drawChart() {
    const target = $('chart');
    const caption = $('chart-caption');
    target.textContent = '';
    const result = lastResult;
    if (!result || !result.rows.length || !chartY.options.length) {
      caption.textContent = result && result.rows.length
        ? 'This result has no numeric column to chart.'
        : 'Run a query with a numeric column to chart it.';
      return;
    }
    const kind = chartKind.value;
    const xIndex = Number(chartX.value);
    const yIndex = Number(chartY.value);
    const data = ViewChart.points(result, kind, xIndex, yIndex);
    const xName = xIndex < 0 ? 'row number' : result.columns[xIndex].name;
    const { svg, description } = ViewChart.render(kind, data, xName, result.columns[yIndex].name, 'chart-svg', target.clientWidth);
    target.append(svg);
    caption.textContent = description;
  }

  for (const control of [chartKind, chartX, chartY]) control.addEventListener('change', drawChart);
  window.addEventListener('resize', () => {
    if (!$('chart-panel').hidden) drawChart();
  });

  // ---- history (this browser only) -------------------------------------------

  function loadHistory() {
    try {
      const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || '[]');
      return Array.isArray(list) ? list.filter((e) => e && typeof e.sql === 'string') : [];
    } catch (_) {
      return [];
    }
  }

  function saveHistory(list) {
    try {
      localStorage.setItem(HISTORY_KEY, JSON.stringify(list.slice(0, HISTORY_MAX)));
    } catch (_) { /* private mode or full: history is a convenience */ }
  }

  // Newest first; running the same SQL again moves it to the top.
  function remember(sql, outcome) {
    const text = sql.trim().slice(0, HISTORY_SQL_MAX);
    if (!text) return;
    const list = loadHistory().filter((e) => e.sql !== text);
    list.unshift({ sql: text, at: Date.now(), ...outcome });
    saveHistory(list);
    renderHistory();
  }

  function outcomeText(entry) {
    const when = new Date(entry.at).toLocaleString();
    const what = entry.kind && entry.kind !== 'query' ? FORMAT_NAMES[entry.kind] + ' download' : null;
    if (entry.error) return [when, what, entry.error].filter(Boolean).join(' · ');
    const rows = typeof entry.rows === 'number' ? entry.rows + (entry.rows === 1 ? ' row' : ' rows') : null;
    const took = typeof entry.elapsed === 'number' ? formatSeconds(entry.elapsed) : null;
    return [when, what, rows, took].filter(Boolean).join(' · ');
  }

  function renderHistory() {
    const list = loadHistory();
    const root = $('history');
    root.textContent = '';
    $('history-count').textContent = list.length
      ? list.length + (list.length === 1 ? ' query' : ' queries')
      : 'No queries yet';
    $('clear-history').disabled = !list.length;
    list.forEach((entry, i) => {
      const firstLine = entry.sql.split('\n').find((l) => l.trim()) || entry.sql;
      const name = 'query ' + (i + 1) + ': ' + firstLine.slice(0, 60);
      root.append(el('li', { class: entry.error ? 'failed' : '' },
        el('pre', { class: 'history-sql', text: entry.sql.length > 400 ? entry.sql.slice(0, 400) + '…' : entry.sql }),
        el('div', { class: 'history-meta muted', text: outcomeText(entry) }),
        el('div', { class: 'history-actions' },
          el('button', {
            type: 'button', class: 'small', text: 'Edit', 'aria-label': 'Edit ' + name,
            title: 'Put this query in the editor',
            onclick: () => replaceSql(entry.sql),
          }),
          el('button', {
            type: 'button', class: 'small', text: 'Run', 'aria-label': 'Run ' + name,
            title: 'Put this query in the editor and run it',
            onclick: () => { replaceSql(entry.sql); run(); },
          }))));
    });
  }

  $('clear-history').addEventListener('click', () => {
    try { localStorage.removeItem(HISTORY_KEY); } catch (_) { /* nothing to clear */ }
    renderHistory();
    setStatus('History cleared.');
    $('tab-history').focus();
  });

  // Another tab of the same view ran something.
  window.addEventListener('storage', (event) => {
    if (event.key === HISTORY_KEY) renderHistory();
  });

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
        remember(sql, { kind: 'query', error: TITLES[error.code] || error.code });
        return;
      }
      const result = await response.json();
      renderResult(result);
      remember(sql, { kind: 'query', rows: result.rowCount, elapsed: result.elapsed });
      // A table or view created, changed or dropped: the schema follows.
      if (/^(CREATE|DROP|ALTER)/.test(result.statementType) || /\b(create|drop|alter)\b/i.test(sql)) loadCatalog();
    } catch (error) {
      showError({ code: 'network', message: 'The view did not answer: ' + error.message });
      setStatus('Failed.');
    } finally {
      endRunning(state);
    }
  }

  // The whole result, run again on the server and streamed as a file.
  async function download(format) {
    if (running) return;
    const sql = currentSql();
    if (!sql.trim()) {
      showError({ code: 'invalid_request', message: 'Write a query first.' });
      return;
    }
    clearError();
    const state = { id: newQueryId(), kind: format, started: performance.now() };
    setRunning(state);
    try {
      const response = await fetch('api/query?format=' + format, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ sql, queryId: state.id }),
      });
      if (!response.ok) {
        const error = await readError(response);
        showError(error);
        setStatus('Download failed.');
        remember(sql, { kind: format, error: TITLES[error.code] || error.code });
        return;
      }
      const blob = await response.blob();
      const disposition = response.headers.get('Content-Disposition') || '';
      const match = /filename="([^"]+)"/.exec(disposition);
      const name = match ? match[1] : 'result.' + format;
      const url = URL.createObjectURL(blob);
      const link = el('a', { href: url, download: name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      const elapsed = (performance.now() - state.started) / 1000;
      setStatus('Downloaded ' + name + ' (' + blob.size.toLocaleString() + ' bytes) · ' + formatSeconds(elapsed));
      remember(sql, { kind: format, elapsed });
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

  // ---- schema browser --------------------------------------------------------

  // A query for the editor, replacing what is there (the history keeps what ran).
  function replaceSql(text) {
    sqlBox.value = text;
    sqlBox.focus();
    sqlBox.setSelectionRange(text.length, text.length);
    saveSql();
  }

  // A name at the cursor (replacing the selection); focus stays in the
  // schema so that several names can be picked in a row.
  function insertAtCursor(text) {
    const { selectionStart, selectionEnd, value } = sqlBox;
    const before = value.slice(0, selectionStart);
    const spaced = before && !/[\s(,.]$/.test(before) ? ' ' + text : text;
    sqlBox.setRangeText(spaced, selectionStart, selectionEnd, 'end');
    saveSql();
    setStatus('Inserted ' + text + '.');
  }

  function quoteIdent(name) {
    return /^[a-z_][a-z0-9_]*$/.test(name) ? name : '"' + name.replace(/"/g, '""') + '"';
  }

  let entrySerial = 0;

  // One table or view: its name (inserts it), a query button, and its
  // columns with their types behind a disclosure button.
  function tableEntry(table, kind) {
    const id = 'columns-' + (++entrySerial);
    const columns = table.columns || [];
    const toggle = el('button', {
      type: 'button', class: 'toggle', 'aria-expanded': 'false', 'aria-controls': id,
      'aria-label': 'Columns of ' + table.name, title: 'Show the columns of ' + table.name,
    });
    const list = el('ul', { id, class: 'columns', hidden: '' }, ...columns.map((c) =>
      el('li', { 'data-column': c.name },
        el('button', {
          type: 'button', class: 'name', text: c.name, title: 'Insert ' + c.name + ' at the cursor',
          'aria-label': 'Insert column ' + c.name + ', ' + c.type,
          onclick: () => insertAtCursor(quoteIdent(c.name)),
        }),
        el('span', { class: 'type', text: c.type, 'aria-hidden': 'true' }))));
    toggle.addEventListener('click', () => setExpanded(toggle, list, toggle.getAttribute('aria-expanded') !== 'true'));
    const entry = el('div', { class: 'table-entry', 'data-table': table.name },
      el('div', { class: 'table-line' },
        toggle,
        el('button', {
          type: 'button', class: 'name', text: table.name,
          title: 'Insert ' + table.name + ' at the cursor' + (table.source ? ' (' + table.source + ')' : ''),
          'aria-label': 'Insert ' + kind + ' ' + table.name,
          onclick: () => insertAtCursor(quoteIdent(table.name)),
        }),
        el('span', { class: 'kind muted', text: table.format || table.kind || '' }),
        el('button', {
          type: 'button', class: 'small query', text: 'Query',
          'aria-label': 'Query ' + table.name, title: 'Write SELECT * FROM ' + table.name + ' in the editor',
          onclick: () => replaceSql('SELECT * FROM ' + quoteIdent(table.name) + ' LIMIT 100;'),
        })),
      list);
    if (table.error) {
      // Why, behind the toggle: DuckDB's reasons are long.
      entry.querySelector('.kind').textContent = 'unavailable';
      entry.querySelector('.kind').classList.add('unavailable');
      list.prepend(el('li', { class: 'unavailable', text: table.error }));
    }
    return entry;
  }

  function setExpanded(toggle, list, open) {
    toggle.setAttribute('aria-expanded', String(open));
    list.hidden = !open;
  }

  // Filters tables by their name or a column's; a column match opens the
  // table and shows the matching columns only.
  function applyFilter() {
    const term = $('schema-filter').value.trim().toLowerCase();
    let shown = 0;
    for (const entry of document.querySelectorAll('#catalog .table-entry')) {
      const tableMatch = !term || entry.dataset.table.toLowerCase().includes(term);
      let columnMatch = false;
      for (const li of entry.querySelectorAll('li[data-column]')) {
        const hit = !term || tableMatch || li.dataset.column.toLowerCase().includes(term);
        li.hidden = !hit;
        if (term && !tableMatch && hit) columnMatch = true;
      }
      entry.hidden = !(tableMatch || columnMatch);
      if (term && columnMatch) setExpanded(entry.querySelector('.toggle'), entry.querySelector('.columns'), true);
      if (!entry.hidden) shown++;
    }
    const note = $('filter-note');
    if (note) note.textContent = term ? shown + (shown === 1 ? ' table matches' : ' tables match') : '';
  }

  $('schema-filter').addEventListener('input', applyFilter);

  function renderCatalog(catalog) {
    const root = $('catalog');
    root.textContent = '';
    $('view-name').textContent = catalog.view;
    document.title = catalog.view + ' · DuckDB view';
    $('engine').textContent = catalog.engine;
    root.append(el('p', { id: 'filter-note', class: 'muted', role: 'status' }));

    root.append(el('h2', { text: 'Tables' }));
    if (catalog.tables.length) catalog.tables.forEach((t) => root.append(tableEntry(t, 'table')));
    else root.append(el('p', { class: 'muted', text: 'No named tables; query the prefixes below.' }));

    if (catalog.workspace.length) {
      root.append(el('h2', { text: 'Workspace' }));
      catalog.workspace.forEach((o) => root.append(tableEntry(o, o.kind || 'table')));
    }

    root.append(el('h2', { text: 'Prefixes' }));
    for (const subset of catalog.subsets) {
      for (const prefix of subset.prefixes) {
        root.append(el('button', {
          type: 'button', class: 'prefix', text: prefix + (subset.write ? ' (read/write)' : ''),
          title: 'List the objects under ' + prefix,
          'aria-label': 'List the objects under ' + prefix,
          onclick: () => replaceSql("SELECT * FROM glob('" + prefix.replace(/'/g, "''") + "**') LIMIT 100;"),
        }));
      }
    }
    applyFilter();
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
      $('catalog').textContent = 'The schema could not be loaded: ' + error.message;
    }
  }

  // ---- editor ----------------------------------------------------------------

  function saveSql() {
    try { localStorage.setItem(STORAGE_KEY, sqlBox.value); } catch (_) { /* private mode */ }
  }

  // Tab indents in the editor; Escape first lets the next Tab leave it, so
  // the editor never traps the keyboard.
  let tabLeaves = false;
  sqlBox.addEventListener('keydown', (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === 'Enter') {
      event.preventDefault();
      run();
    } else if (event.key === 'Escape') {
      tabLeaves = true;
    } else if (event.key === 'Tab' && !event.shiftKey && !event.ctrlKey && !event.metaKey && !event.altKey && !tabLeaves) {
      event.preventDefault();
      sqlBox.setRangeText('  ', sqlBox.selectionStart, sqlBox.selectionEnd, 'end');
      saveSql();
    } else if (event.key !== 'Shift') {
      tabLeaves = false;
    }
  });
  sqlBox.addEventListener('blur', () => { tabLeaves = false; });
  sqlBox.addEventListener('input', saveSql);
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && running) cancel();
  });
  runButton.addEventListener('click', run);
  cancelButton.addEventListener('click', cancel);
  downloadButtons.csv.addEventListener('click', () => download('csv'));
  downloadButtons.parquet.addEventListener('click', () => download('parquet'));
  $('refresh-catalog').addEventListener('click', loadCatalog);

  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved) sqlBox.value = saved;
  } catch (_) { /* private mode */ }
  showSidePanel('tab-schema');
  showResultPanel('tab-table');
  renderHistory();
  loadCatalog();
})();
