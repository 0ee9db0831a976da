// The hub's home page: the signed-in person's views with their live status,
// from the views API. The client is built on the API's own OpenAPI document:
// operations are called by operationId, so a path the API does not document
// cannot be called from here.

import { confirmAction, decorate } from './runs.js';

const POLL_MS = 2000;

const $ = (selector, root = document) => root.querySelector(selector);

/// Errors in the API's own format ({error, message, details}).
export class ApiFailure extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error;
    this.details = body?.details ?? {};
  }
}

/// A client for every operation in /_api/openapi.json, by operationId;
/// parameters not in the path go in the query string.
export async function apiClient() {
  const response = await fetch('/_api/openapi.json', { headers: { accept: 'application/json' } });
  if (!response.ok) throw new ApiFailure(response.status, await response.json().catch(() => null));
  const document = await response.json();
  const operations = new Map();
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      if (operation?.operationId) operations.set(operation.operationId, { path, method: method.toUpperCase() });
    }
  }
  return async (operationId, parameters = {}, body = undefined) => {
    const operation = operations.get(operationId);
    if (!operation) throw new Error(`the API documents no operation ${operationId}`);
    const inPath = (name) => operation.path.includes(`{${name}}`);
    const query = new URLSearchParams(
      Object.entries(parameters).filter(([name, value]) => !inPath(name) && value !== undefined),
    ).toString();
    const url =
      operation.path.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(parameters[name])) + (query ? `?${query}` : '');
    const headers = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const answer = await fetch(url, {
      method: operation.method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await answer.text();
    const data = text ? JSON.parse(text) : null;
    if (!answer.ok) throw new ApiFailure(answer.status, data);
    return data;
  };
}

const PHASES = {
  cold: 'Stopped',
  starting: 'Starting',
  ready: 'Running',
  failed: 'Failed',
};

/// "in 12 min", "in 1 h 5 min", "in 40 s".
function inTime(until) {
  const seconds = Math.max(0, Math.round((until - Date.now()) / 1000));
  if (seconds < 60) return `in ${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `in ${minutes} min`;
  return `in ${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/// The view's host on this gateway's scheme and port.
function viewLink(view) {
  const port = location.port ? `:${location.port}` : '';
  return `${location.protocol}//${view.hostname}${port}/`;
}

function subsetsText(view) {
  return view.subsets
    .map((subset) => subset.prefixes.map((prefix) => `${subset.bucket}/${prefix}`).join(', '))
    .join('; ');
}

function sharedText(view) {
  const shared = view.sharedWith ?? {};
  const names = [...(shared.users ?? []), ...(shared.groups ?? []).map((group) => `group ${group}`)];
  return names.join(', ');
}

const state = {
  call: null,
  me: null, // null: sign-in is off
  views: [],
  phases: new Map(),
};

function announce(text) {
  $('#announcer').textContent = text;
}

function showProblem(text) {
  const problem = $('#problem');
  problem.hidden = !text;
  problem.textContent = text ?? '';
}

function mayManage(view) {
  return state.me === null || state.me.admin || view.owner === state.me.user;
}

function render() {
  const list = $('#views');
  const template = $('#view-template');
  const focused = document.activeElement?.closest?.('.view')?.dataset.name;
  const focusedClass = document.activeElement?.className;
  list.replaceChildren();
  $('#empty').hidden = state.views.length > 0;
  for (const view of state.views) {
    const item = template.content.firstElementChild.cloneNode(true);
    item.dataset.name = view.name;
    item.dataset.phase = view.status.phase;
    const link = viewLink(view);
    $('.open', item).href = link;
    $('.open', item).textContent = view.name;
    const openButton = $('.open-button', item);
    openButton.href = link;
    openButton.setAttribute('aria-label', `Open ${view.name}`);
    const phase = $('.phase', item);
    phase.textContent = PHASES[view.status.phase] ?? view.status.phase;
    phase.dataset.phase = view.status.phase;
    const reason = view.status.reason ? ` (${view.status.reason})` : '';
    $('.message', item).textContent = view.status.message ? `${view.status.message}${reason}` : '';
    $('.message', item).hidden = !view.status.message;
    $('.subsets', item).textContent = subsetsText(view);
    const showOwner = view.owner && (state.me === null || view.owner !== state.me.user);
    $('.owner-fact', item).hidden = !showOwner;
    $('.owner', item).textContent = view.owner ?? '';
    const shared = sharedText(view);
    $('.shared-fact', item).hidden = !shared;
    $('.shared', item).textContent = shared;
    const running = view.status.phase === 'ready' || view.status.phase === 'starting';
    const idleSince = Date.parse(view.status.lastActivity ?? '') || null;
    $('.idle-fact', item).hidden = !(running && idleSince);
    if (running && idleSince) {
      $('.idle', item).dataset.until = String(idleSince + view.idleTimeoutSeconds * 1000);
    }
    const deadline = Date.parse(view.status.deadline ?? '') || null;
    $('.deadline-fact', item).hidden = !(running && deadline);
    if (running && deadline) $('.deadline', item).dataset.until = String(deadline);
    const stop = $('.stop', item);
    stop.hidden = !(running && mayManage(view));
    stop.setAttribute('aria-label', `Stop now: ${view.name}`);
    stop.addEventListener('click', () => stopView(view.name));
    const remove = $('.delete', item);
    remove.hidden = !mayManage(view);
    remove.setAttribute('aria-label', `Delete ${view.name}`);
    remove.addEventListener('click', () => deleteView(view.name));
    decorate(item, view, hub);
    list.append(item);
  }
  tick();
  // Keep keyboard focus where it was across a refresh.
  if (focused && focusedClass) {
    const again = list.querySelector(`.view[data-name="${CSS.escape(focused)}"] .${focusedClass.split(' ')[0]}`);
    again?.focus();
  }
}

/// Counts the time-left facts down between refreshes.
function tick() {
  for (const element of document.querySelectorAll('[data-until]')) {
    element.textContent = inTime(Number(element.dataset.until));
  }
}

export async function refresh() {
  try {
    const { views } = await state.call('listViews');
    for (const view of views) {
      const before = state.phases.get(view.name);
      if (before && before !== view.status.phase) {
        announce(`${view.name}: ${PHASES[view.status.phase] ?? view.status.phase}`);
      }
      state.phases.set(view.name, view.status.phase);
    }
    state.views = views;
    showProblem(null);
    render();
    $('#updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    showProblem(
      error.status === 401
        ? 'Your session has ended. Reload the page to sign in again.'
        : `The gateway did not answer: ${error.message}`,
    );
  }
}

async function stopView(name) {
  try {
    await state.call('stopView', { name });
    await refresh();
    announce(`${name} stopped`);
  } catch (error) {
    showProblem(`${name} was not stopped: ${error.message}`);
  }
}

async function deleteView(name) {
  const confirmed = await confirmAction({
    title: `Delete ${name}?`,
    text: 'Its workload stops and its address goes; its data in the lake stays.',
    action: `Delete ${name}`,
    opener: { name, className: 'delete' },
  });
  if (!confirmed) return;
  try {
    await state.call('deleteView', { name });
    await refresh();
    announce(`${name} deleted`);
    $('#views-heading').focus();
  } catch (error) {
    showProblem(`${name} was not deleted: ${error.message}`);
  }
}

/// What runs.js needs of the page.
const hub = {
  call: (...args) => state.call(...args),
  refresh: () => refresh(),
  announce,
  showProblem,
  mayManage,
};

function renderMe() {
  const who = $('#who');
  const grants = $('#grants');
  if (state.me === null) {
    who.textContent = 'Sign-in is off on this gateway: everyone sees every view.';
    $('#sign-out').hidden = true;
    grants.replaceChildren(Object.assign(document.createElement('li'), { textContent: 'Everything the gateway may read.' }));
    return;
  }
  const groups = state.me.groups.length ? ` (${state.me.groups.join(', ')})` : '';
  who.textContent = `Signed in as ${state.me.user}${groups}${state.me.admin ? ', administrator: you see every view' : ''}.`;
  grants.replaceChildren(
    ...(state.me.grants.length
      ? state.me.grants.map((grant) =>
          Object.assign(document.createElement('li'), {
            textContent: `${grant.access === 'write' ? 'Read and write' : 'Read'}: ${grant.prefixes
              .map((prefix) => `${grant.bucket}/${prefix}`)
              .join(', ')}`,
          }),
        )
      : [Object.assign(document.createElement('li'), { textContent: 'Nothing yet: ask your data platform team.' })]),
  );
}

async function main() {
  $('#views-heading').tabIndex = -1;
  try {
    state.call = await apiClient();
    try {
      state.me = await state.call('me');
    } catch (error) {
      if (error.status !== 404) throw error;
      state.me = null; // sign-in is off
    }
  } catch (error) {
    showProblem(
      error.status === 401
        ? 'Your session has ended. Reload the page to sign in again.'
        : `The gateway did not answer: ${error.message}`,
    );
    $('#who').textContent = '';
    return;
  }
  renderMe();
  await refresh();
  setInterval(tick, 1000);
  setInterval(() => {
    if (document.visibilityState === 'visible') refresh();
  }, POLL_MS);
}

main();
