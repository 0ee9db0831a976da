// The hub's "New view" form: a view built from what the signed-in person may
// read. They browse the buckets and prefixes they are entitled to (listed by
// the gateway with its own lake keys: /_api/lake…), add files or folders as
// tables (path and format), preview a table's first rows, share with users
// or groups, and create the view with POST /_api/views. Errors are the API's
// own ({error, message, details}); `details.field` (a JSON Pointer into the
// request) or `details.parameter` says which field they go beside.

import { ApiFailure, apiClient, refresh } from './app.js';

const $ = (selector, root = document) => root.querySelector(selector);

const FORMATS = ['parquet', 'csv', 'json'];
const EXTENSIONS = { parquet: 'parquet', csv: 'csv', tsv: 'csv', json: 'json', jsonl: 'json', ndjson: 'json' };

const FORM = `
  <h2 id="new-view-heading">New view</h2>
  <p class="quiet">A DuckDB workspace over data you may read. Nothing starts until you open it.</p>
  <form id="nv-form" novalidate>
    <div class="field">
      <label for="nv-name">Name</label>
      <p id="nv-name-hint" class="hint">3 to 8 characters: lowercase letters, digits and "-", starting with a letter.</p>
      <input id="nv-name" name="name" autocomplete="off" spellcheck="false" aria-describedby="nv-name-hint nv-name-error">
      <p id="nv-name-error" class="field-error" hidden></p>
    </div>
    <fieldset>
      <legend>Data you may read</legend>
      <p class="hint">Open a folder to look inside; add a file or a whole folder as a table.</p>
      <nav aria-label="Where you are in the lake"><ol id="nv-crumbs" class="crumbs"></ol></nav>
      <ul id="nv-entries" class="entries" aria-label="Folders and files here" aria-busy="false"></ul>
      <button type="button" id="nv-more" hidden>Show more</button>
      <p id="nv-browse-error" class="field-error" hidden></p>
    </fieldset>
    <fieldset>
      <legend>Tables</legend>
      <p id="nv-tables-empty" class="hint" tabindex="-1">No tables yet: add a file or folder above.</p>
      <ul id="nv-tables" class="tables"></ul>
      <p id="nv-tables-error" class="field-error" hidden></p>
    </fieldset>
    <section id="nv-preview" class="preview" hidden>
      <h3 id="nv-preview-heading">Preview</h3>
      <p id="nv-preview-about" class="hint"></p>
      <div id="nv-preview-scroll" class="preview-scroll" role="region" aria-labelledby="nv-preview-heading" tabindex="0"></div>
    </section>
    <fieldset>
      <legend>Share with (optional)</legend>
      <div class="field">
        <label for="nv-users">Users</label>
        <p id="nv-users-hint" class="hint">User ids, separated by commas.</p>
        <input id="nv-users" autocomplete="off" aria-describedby="nv-users-hint nv-users-error">
        <p id="nv-users-error" class="field-error" hidden></p>
      </div>
      <div class="field">
        <label for="nv-groups">Groups</label>
        <p id="nv-groups-hint" class="hint">Group names, separated by commas.</p>
        <input id="nv-groups" autocomplete="off" aria-describedby="nv-groups-hint nv-groups-error">
        <p id="nv-groups-error" class="field-error" hidden></p>
      </div>
    </fieldset>
    <p id="nv-form-error" class="field-error" hidden></p>
    <div class="actions">
      <button type="submit" id="nv-create" class="primary">Create view</button>
    </div>
    <p id="nv-status" class="visually-hidden" aria-live="polite"></p>
  </form>`;

const state = {
  call: null,
  roots: [], // [{bucket, prefix}]
  at: null, // {bucket, prefix, root} or null: the roots
  next: null,
  tables: [], // [{id, bucket, name, path, format}]
  counter: 0,
};

/// The key's last segment ("region=eu/" for a prefix, "data.parquet" for a key).
function lastSegment(key) {
  const trimmed = key.endsWith('/') ? key.slice(0, -1) : key;
  return trimmed.slice(trimmed.lastIndexOf('/') + 1) + (key.endsWith('/') ? '/' : '');
}

function formatOf(key) {
  const extension = key.includes('.') ? key.slice(key.lastIndexOf('.') + 1).toLowerCase() : '';
  return EXTENSIONS[extension] ?? null;
}

/// A SQL table name from a key: lowercase letters, digits and "_".
function tableName(key) {
  let name = lastSegment(key).replace(/\/$/, '').replace(/\.[^.]*$/, '').toLowerCase().replace(/[^a-z0-9_]+/g, '_');
  name = name.replace(/^_+|_+$/g, '') || 'data';
  if (/^[0-9]/.test(name)) name = `t_${name}`;
  name = name.slice(0, 60);
  let unique = name;
  for (let n = 2; state.tables.some((t) => t.name === unique); n += 1) unique = `${name}_${n}`;
  return unique;
}

/// Where a table path's keys lie: its part up to the last "/" before any glob character.
function directoryOf(path) {
  const glob = path.search(/[*?[{]/);
  const literal = glob < 0 ? path : path.slice(0, glob);
  return literal.slice(0, literal.lastIndexOf('/') + 1);
}

function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function say(text) {
  $('#nv-status').textContent = text;
}

/// Show (or clear, with null) the error beside a field; the field is marked invalid.
function fieldError(id, text, input = null) {
  const element = $(`#${id}`);
  element.hidden = !text;
  element.textContent = text ?? '';
  if (input) {
    if (text) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }
}

function button(text, label, onClick, className = '') {
  const element = document.createElement('button');
  element.type = 'button';
  element.textContent = text;
  if (label) element.setAttribute('aria-label', label);
  if (className) element.className = className;
  element.addEventListener('click', onClick);
  return element;
}

// ---------------------------------------------------------------------------
// Browsing

async function loadRoots() {
  try {
    const { roots } = await state.call('lakeRoots');
    state.roots = roots.flatMap((grant) => grant.prefixes.map((prefix) => ({ bucket: grant.bucket, prefix })));
    fieldError('nv-browse-error', null);
  } catch (error) {
    fieldError('nv-browse-error', `The lake cannot be browsed: ${error.message}`);
  }
  await open(null);
}

/// Show a place: null for the roots, else {bucket, prefix, root}.
async function open(at, focus = false) {
  state.at = at;
  state.next = null;
  const list = $('#nv-entries');
  list.setAttribute('aria-busy', 'true');
  renderCrumbs();
  if (at === null) {
    list.replaceChildren(
      ...state.roots.map((root) =>
        entry(`${root.bucket}/${root.prefix}`, 'folder', () => open({ ...root, root: root.prefix }, true), root.bucket, root.prefix),
      ),
    );
    if (state.roots.length === 0) {
      list.replaceChildren(Object.assign(document.createElement('li'), { textContent: 'You may read nothing yet: ask your data platform team.' }));
    }
    list.setAttribute('aria-busy', 'false');
    $('#nv-more').hidden = true;
    if (focus) list.querySelector('button')?.focus();
    return;
  }
  list.replaceChildren();
  await more();
  list.setAttribute('aria-busy', 'false');
  if (focus) list.querySelector('button')?.focus();
}

/// The next page of the current place.
async function more() {
  const { bucket, prefix } = state.at;
  try {
    const page = await state.call('listLake', { bucket, prefix, after: state.next ?? undefined });
    const list = $('#nv-entries');
    for (const sub of page.prefixes) {
      list.append(entry(lastSegment(sub), 'folder', () => open({ ...state.at, prefix: sub }, true), bucket, sub));
    }
    for (const object of page.objects) {
      list.append(entry(lastSegment(object.key), 'file', null, bucket, object.key, object.size));
    }
    if (page.prefixes.length === 0 && page.objects.length === 0 && !state.next) {
      list.append(Object.assign(document.createElement('li'), { textContent: 'Nothing here.' }));
    }
    state.next = page.next ?? null;
    $('#nv-more').hidden = !state.next;
    fieldError('nv-browse-error', null);
    say(`${bucket}/${prefix}: ${page.prefixes.length} folders, ${page.objects.length} files`);
  } catch (error) {
    fieldError('nv-browse-error', error.message);
  }
}

/// One folder or file: open it (folders), add it as a table.
function entry(text, kind, onOpen, bucket, key, size) {
  const item = document.createElement('li');
  item.className = `entry ${kind}`;
  item.dataset.key = key;
  if (kind === 'folder' && onOpen) {
    item.append(button(text, `Open folder ${text}`, onOpen, 'link'));
  } else {
    const name = Object.assign(document.createElement('span'), { className: 'entry-name', textContent: text });
    item.append(name);
    if (size !== undefined) item.append(Object.assign(document.createElement('span'), { className: 'quiet', textContent: humanSize(size) }));
  }
  const add = button('Add as table', `Add as table: ${kind} ${text}`, () => addTable(bucket, key, kind), 'add');
  item.append(add);
  return item;
}

function renderCrumbs() {
  const crumbs = $('#nv-crumbs');
  const items = [];
  const crumb = (text, target, current) => {
    const li = document.createElement('li');
    if (current) {
      li.append(Object.assign(document.createElement('span'), { textContent: text }));
      li.firstChild.setAttribute('aria-current', 'location');
    } else {
      li.append(button(text, null, () => open(target, true), 'link'));
    }
    items.push(li);
  };
  crumb('All you may read', null, state.at === null);
  if (state.at !== null) {
    const { bucket, prefix, root } = state.at;
    crumb(`${bucket}/${root}`, { bucket, prefix: root, root }, prefix === root);
    const below = prefix.slice(root.length).split('/').filter(Boolean);
    let path = root;
    below.forEach((segment, index) => {
      path += `${segment}/`;
      crumb(`${segment}/`, { bucket, prefix: path, root }, index === below.length - 1);
    });
  }
  crumbs.replaceChildren(...items);
}

// ---------------------------------------------------------------------------
// Tables

function addTable(bucket, key, kind) {
  const format = kind === 'folder' ? 'parquet' : (formatOf(key) ?? 'csv');
  const path = kind === 'folder' ? `${key}**/*.${format}` : key;
  const table = { id: (state.counter += 1), bucket, name: tableName(key), path, format };
  state.tables.push(table);
  renderTables();
  fieldError('nv-tables-error', null);
  say(`Table ${table.name} added: ${bucket}/${path}`);
  $(`#nv-table-${table.id}-name`).focus();
}

function renderTables() {
  const list = $('#nv-tables');
  $('#nv-tables-empty').hidden = state.tables.length > 0;
  list.replaceChildren(...state.tables.map(tableRow));
}

function tableRow(table) {
  const id = `nv-table-${table.id}`;
  const item = document.createElement('li');
  item.className = 'table';
  item.dataset.table = table.name;
  const field = (label, control, hint) => {
    const wrap = document.createElement('div');
    wrap.className = 'field';
    const labelElement = Object.assign(document.createElement('label'), { textContent: label, htmlFor: control.id });
    wrap.append(labelElement, control);
    if (hint) wrap.append(hint);
    return wrap;
  };
  const name = Object.assign(document.createElement('input'), { id: `${id}-name`, value: table.name, autocomplete: 'off', spellcheck: false });
  name.setAttribute('aria-describedby', `${id}-error`);
  name.addEventListener('input', () => {
    table.name = name.value.trim();
    item.dataset.table = table.name;
  });
  const path = Object.assign(document.createElement('input'), { id: `${id}-path`, value: table.path, autocomplete: 'off', spellcheck: false });
  path.setAttribute('aria-describedby', `${id}-path-hint ${id}-error`);
  path.addEventListener('input', () => {
    table.path = path.value.trim();
  });
  const pathHint = Object.assign(document.createElement('p'), {
    id: `${id}-path-hint`,
    className: 'hint',
    textContent: `In bucket ${table.bucket}; * and ** match many files.`,
  });
  const format = Object.assign(document.createElement('select'), { id: `${id}-format` });
  for (const option of FORMATS) format.append(new Option(option, option, false, option === table.format));
  format.addEventListener('change', () => {
    const before = table.format;
    table.format = format.value;
    // A folder's glob follows the format: **/*.parquet → **/*.csv.
    if (table.path.endsWith(`*.${before}`)) {
      table.path = `${table.path.slice(0, -before.length)}${table.format}`;
      path.value = table.path;
    }
  });
  const actions = document.createElement('div');
  actions.className = 'actions';
  actions.append(
    button('Preview', `Preview table ${table.name}`, () => preview(table), 'preview-button'),
    button('Remove', `Remove table ${table.name}`, () => {
      state.tables = state.tables.filter((t) => t !== table);
      renderTables();
      say(`Table ${table.name} removed`);
      ($('#nv-tables input') ?? $('#nv-tables-empty')).focus();
    }),
  );
  const error = Object.assign(document.createElement('p'), { id: `${id}-error`, className: 'field-error', hidden: true });
  const pathField = field('Path', path, pathHint);
  pathField.classList.add('wide');
  item.append(field('Table name', name), field('Format', format), pathField, actions, error);
  return item;
}

function tableError(table, text) {
  const id = `nv-table-${table.id}`;
  fieldError(`${id}-error`, text, $(`#${id}-path`));
  if (text) $(`#${id}-name`).setAttribute('aria-invalid', 'true');
  else $(`#${id}-name`).removeAttribute('aria-invalid');
}

async function preview(table) {
  const section = $('#nv-preview');
  const scroll = $('#nv-preview-scroll');
  section.hidden = false;
  $('#nv-preview-about').textContent = `Reading ${table.bucket}/${table.path}…`;
  scroll.replaceChildren();
  try {
    const shown = await state.call('previewTable', { bucket: table.bucket, path: table.path, format: table.format });
    tableError(table, null);
    const omitted = shown.columnsOmitted ? `, ${shown.columnsOmitted} more columns not shown` : '';
    $('#nv-preview-about').textContent =
      `Table ${table.name}: the first ${shown.rows.length} rows of ${shown.bucket}/${shown.key}${omitted}.`;
    const grid = document.createElement('table');
    grid.className = 'grid';
    const caption = Object.assign(document.createElement('caption'), {
      className: 'visually-hidden',
      textContent: `First rows of ${table.name}`,
    });
    const head = document.createElement('thead');
    const headRow = document.createElement('tr');
    for (const column of shown.columns) {
      const th = Object.assign(document.createElement('th'), { scope: 'col', textContent: column.name });
      if (column.type) th.append(Object.assign(document.createElement('span'), { className: 'type', textContent: column.type }));
      headRow.append(th);
    }
    head.append(headRow);
    const body = document.createElement('tbody');
    for (const row of shown.rows) {
      const tr = document.createElement('tr');
      for (const value of row) {
        const td = document.createElement('td');
        if (value === null) {
          td.textContent = 'NULL';
          td.className = 'null';
        } else td.textContent = value;
        tr.append(td);
      }
      body.append(tr);
    }
    grid.append(caption, head, body);
    scroll.replaceChildren(grid);
    say(`Preview of ${table.name}: ${shown.rows.length} rows, ${shown.columns.length} columns`);
  } catch (error) {
    section.hidden = true;
    tableError(table, error.message);
    say(`No preview of ${table.name}: ${error.message}`);
  }
}

// ---------------------------------------------------------------------------
// Creating

const commaList = (text) =>
  text
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);

/// The request, and for each subset the tables it holds (to place errors).
function request() {
  const byBucket = new Map();
  for (const table of state.tables) {
    if (!byBucket.has(table.bucket)) byBucket.set(table.bucket, []);
    byBucket.get(table.bucket).push(table);
  }
  const subsets = [];
  const tablesOf = [];
  for (const [bucket, tables] of byBucket) {
    const directories = [...new Set(tables.map((t) => directoryOf(t.path)))];
    // The narrowest prefixes that hold every table, none within another.
    const prefixes = directories.filter((d) => !directories.some((other) => other !== d && d.startsWith(other)));
    subsets.push({
      bucket,
      prefixes,
      tables: Object.fromEntries(tables.map((t) => [t.name, { path: t.path, format: t.format }])),
    });
    tablesOf.push(tables);
  }
  const body = { name: $('#nv-name').value.trim(), subsets };
  const users = commaList($('#nv-users').value);
  const groups = commaList($('#nv-groups').value);
  if (users.length || groups.length) {
    body.sharedWith = {};
    if (users.length) body.sharedWith.users = users;
    if (groups.length) body.sharedWith.groups = groups;
  }
  return { body, tablesOf };
}

function clearErrors() {
  for (const [id, input] of [
    ['nv-name-error', '#nv-name'],
    ['nv-users-error', '#nv-users'],
    ['nv-groups-error', '#nv-groups'],
  ]) {
    fieldError(id, null, $(input));
  }
  fieldError('nv-tables-error', null);
  fieldError('nv-form-error', null);
  for (const table of state.tables) tableError(table, null);
}

/// Put an API error beside the field its `details.field` names; returns the element to focus.
function showError(error, tablesOf) {
  const field = error.details?.field ?? '';
  const message = error.message;
  if (field === '/name') {
    fieldError('nv-name-error', message, $('#nv-name'));
    return $('#nv-name');
  }
  if (field.startsWith('/sharedWith/users')) {
    fieldError('nv-users-error', message, $('#nv-users'));
    return $('#nv-users');
  }
  if (field.startsWith('/sharedWith/groups')) {
    fieldError('nv-groups-error', message, $('#nv-groups'));
    return $('#nv-groups');
  }
  const tableMatch = /^\/subsets\/(\d+)\/tables\/([^/]+)/.exec(field);
  if (tableMatch) {
    const name = tableMatch[2].replace(/~1/g, '/').replace(/~0/g, '~');
    const table = (tablesOf[Number(tableMatch[1])] ?? []).find((t) => t.name === name);
    if (table) {
      tableError(table, message);
      return $(`#nv-table-${table.id}-path`);
    }
  }
  if (field.startsWith('/subsets') || (field === '' && error.code === 'not_entitled')) {
    fieldError('nv-tables-error', message);
    return $('#nv-tables-error');
  }
  fieldError('nv-form-error', message);
  return $('#nv-form-error');
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  if (state.tables.length === 0) {
    fieldError('nv-tables-error', 'Add at least one table: open a folder above and choose Add as table.');
    $('#nv-tables-error').tabIndex = -1;
    $('#nv-tables-error').focus();
    return;
  }
  const { body, tablesOf } = request();
  const create = $('#nv-create');
  create.disabled = true;
  say('Creating the view…');
  try {
    const view = await state.call('createView', {}, body);
    say(`View ${view.name} created`);
    state.tables = [];
    renderTables();
    $('#nv-form').reset();
    $('#nv-preview').hidden = true;
    await refresh();
    const card = document.querySelector(`li.view[data-name="${CSS.escape(view.name)}"] .open`);
    card?.focus();
  } catch (error) {
    if (!(error instanceof ApiFailure)) throw error;
    const target = showError(error, tablesOf);
    if (target && target.tabIndex < 0 && !['INPUT', 'SELECT'].includes(target.tagName)) target.tabIndex = -1;
    target?.focus();
    say(`The view was not created: ${error.message}`);
  } finally {
    create.disabled = false;
  }
}

async function main() {
  const section = $('#new-view');
  section.innerHTML = FORM; // constant markup: nothing from data goes through innerHTML
  try {
    state.call = await apiClient();
  } catch {
    section.hidden = true; // app.js says what went wrong
    return;
  }
  $('#nv-form').addEventListener('submit', submit);
  $('#nv-more').addEventListener('click', more);
  renderTables();
  await loadRoots();
}

main();
