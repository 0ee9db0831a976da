// The stop banner: a few minutes before the gateway stops this view (its
// run's deadline, or its idle timeout), a banner at the top of the page says
// when and why, and offers to extend the deadline (within the operator's
// cap) or to keep an idle view running. It reads the run from the gateway's
// own path on this host, `/_gateway/view` (answered for the signed-in
// person; the gateway refuses writes from other pages), and stays hidden
// where there is no gateway (the view run on its own).
'use strict';

(function () {
  const VIEW_PATH = '/_gateway/view';
  const FETCH_MS = 20000;
  const RENDER_MS = 5000;
  const EXTEND_SECONDS = 3600;

  const banner = document.getElementById('stop-banner');
  const text = document.getElementById('stop-banner-text');
  const extendButton = document.getElementById('stop-banner-extend');
  const keepButton = document.getElementById('stop-banner-keep');
  if (!banner) return;

  let run = null; // the last answer: { view, warningSeconds }
  let problem = '';

  function minutes(seconds) {
    const whole = Math.max(0, Math.round(seconds));
    if (whole < 60) return `${whole} s`;
    const m = Math.round(whole / 60);
    return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`.replace(/ 0 min$/, '');
  }

  /// When the gateway stops the run, and why: the earlier of its deadline
  /// and its idle stop (the last activity it recorded, or the run's start,
  /// plus the idle timeout).
  function nextStop(view) {
    const status = view.status;
    const stops = [];
    const deadline = Date.parse(status.deadline || '');
    if (deadline) stops.push({ at: deadline, why: 'deadline' });
    const active = Math.max(Date.parse(status.lastActivity || '') || 0, Date.parse(status.startedAt || '') || 0);
    if (active) stops.push({ at: active + view.idleTimeoutSeconds * 1000, why: 'idle' });
    stops.sort((a, b) => a.at - b.at);
    return stops[0] || null;
  }

  /// Seconds that may still be added to the deadline.
  function allowance(view) {
    const deadline = Date.parse(view.status.deadline || '');
    const max = Date.parse(view.status.maxDeadline || '');
    return deadline && max ? Math.floor((max - deadline) / 1000) : 0;
  }

  function render() {
    const stop = run && nextStop(run.view);
    const left = stop ? (stop.at - Date.now()) / 1000 : Infinity;
    const warn = stop && left <= run.warningSeconds;
    banner.hidden = !warn && !problem;
    if (banner.hidden) return;
    const allowed = Math.min(EXTEND_SECONDS, allowance(run.view));
    let message;
    if (!warn) {
      message = '';
    } else if (stop.why === 'deadline') {
      const at = new Date(stop.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      message = `This view stops in ${minutes(left)}, at ${at}: its run reaches its deadline.`;
      if (allowed < 60) message += ' It cannot be extended further on this gateway; save what you need.';
    } else {
      message = `This view stops in ${minutes(left)} if nobody uses it: it is idle.`;
    }
    const next = [message, problem].filter(Boolean).join(' ');
    // Only a changed text is announced (once a minute at most).
    if (text.textContent !== next) text.textContent = next;
    extendButton.hidden = !(warn && stop.why === 'deadline' && allowed >= 60);
    extendButton.textContent = `Extend by ${minutes(allowed)}`;
    keepButton.hidden = !(warn && stop.why === 'idle');
  }

  async function load() {
    try {
      const response = await fetch(VIEW_PATH, { headers: { accept: 'application/json' } });
      if (!response.ok) return; // no gateway here, or not signed in: no banner
      run = await response.json();
    } catch {
      return;
    }
    render();
  }

  extendButton.addEventListener('click', async () => {
    const seconds = Math.min(EXTEND_SECONDS, allowance(run.view));
    extendButton.disabled = true;
    try {
      const response = await fetch(VIEW_PATH + '/extend', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ seconds }),
      });
      const body = await response.json().catch(() => null);
      if (response.ok) {
        run = body;
        problem = '';
        text.textContent = '';
        document.getElementById('stop-banner-done').textContent = `Extended by ${minutes(seconds)}.`;
      } else {
        problem = `Not extended: ${body?.message || `HTTP ${response.status}`}`;
      }
    } finally {
      extendButton.disabled = false;
      render();
    }
  });

  // Any request to the view counts as activity: the gateway records it
  // within its next idle check.
  keepButton.addEventListener('click', async () => {
    keepButton.disabled = true;
    try {
      await fetch('healthz', { cache: 'no-store' });
      document.getElementById('stop-banner-done').textContent = 'Kept running: the idle time starts again.';
      if (run) run.view.status.lastActivity = new Date().toISOString();
    } finally {
      keepButton.disabled = false;
      render();
    }
  });

  load();
  setInterval(load, FETCH_MS);
  setInterval(render, RENDER_MS);
})();
