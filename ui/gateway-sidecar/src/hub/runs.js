// A view's run in the hub: how long it has run and what it requests (what an
// administrator looks at across everyone's views), and the actions on it
// beyond Open and Stop now: Extend its deadline (within the operator's cap),
// Restart and Delete, the last two behind a confirmation dialog that works
// from the keyboard (focus starts on Cancel, Escape cancels, focus comes back
// to the button that opened it).

const EXTEND_SECONDS = 3600;

/// "1 h 5 min", "12 min", "40 s".
function duration(seconds) {
  const whole = Math.max(0, Math.round(seconds));
  if (whole < 60) return `${whole} s`;
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) return `${minutes} min`;
  return minutes % 60 ? `${Math.floor(minutes / 60)} h ${minutes % 60} min` : `${minutes / 60} h`;
}

function fact(className, term) {
  const item = document.createElement('div');
  item.className = `${className}-fact`;
  const dt = Object.assign(document.createElement('dt'), { textContent: term });
  const dd = Object.assign(document.createElement('dd'), { className });
  item.append(dt, dd);
  return item;
}

function button(className, text, label) {
  const element = Object.assign(document.createElement('button'), { type: 'button', className, textContent: text });
  element.setAttribute('aria-label', label);
  return element;
}

/// The dialog, made once: a title, a text, Cancel and the action.
function dialog() {
  let element = document.getElementById('confirm');
  if (element) return element;
  element = document.createElement('dialog');
  element.id = 'confirm';
  element.setAttribute('aria-labelledby', 'confirm-title');
  element.setAttribute('aria-describedby', 'confirm-text');
  element.innerHTML =
    '<h2 id="confirm-title"></h2><p id="confirm-text"></p>' +
    '<div class="actions"><button type="button" class="cancel">Cancel</button>' +
    '<button type="button" class="confirm"></button></div>';
  element.querySelector('.cancel').addEventListener('click', () => element.close('cancel'));
  element.querySelector('.confirm').addEventListener('click', () => element.close('confirm'));
  document.body.append(element);
  return element;
}

/// Ask before something that cannot be undone: resolves true on the action,
/// false on Cancel or Escape.
export function confirmAction({ title, text, action, opener }) {
  const element = dialog();
  element.querySelector('#confirm-title').textContent = title;
  element.querySelector('#confirm-text').textContent = text;
  element.querySelector('.confirm').textContent = action;
  element.returnValue = '';
  return new Promise((resolve) => {
    element.addEventListener(
      'close',
      () => {
        // The list may have been redrawn meanwhile: the same button, anew.
        const again = opener && document.querySelector(
          `.view[data-name="${CSS.escape(opener.name)}"] .${opener.className}`,
        );
        again?.focus();
        resolve(element.returnValue === 'confirm');
      },
      { once: true },
    );
    element.showModal();
    element.querySelector('.cancel').focus();
  });
}

/// What may be added to the run's deadline now (seconds), within the cap.
function allowance(view) {
  const deadline = Date.parse(view.status.deadline ?? '');
  const max = Date.parse(view.status.maxDeadline ?? '');
  if (!deadline || !max) return 0;
  return Math.floor((max - deadline) / 1000);
}

/// Adds the run's facts and the actions to one view's entry of the list.
/// `hub`: { call, refresh, announce, showProblem, mayManage }.
export function decorate(item, view, hub) {
  const running = view.status.phase === 'ready' || view.status.phase === 'starting';
  const facts = item.querySelector('.facts');
  const started = Date.parse(view.status.startedAt ?? '');
  const runFact = fact('ran', 'Running for');
  runFact.hidden = !(running && started);
  if (started) runFact.querySelector('dd').textContent = duration((Date.now() - started) / 1000);
  const requests = view.status.requests ?? {};
  const requestsFact = fact('requests', 'Requests');
  requestsFact.hidden = !(running && (requests.cpu || requests.memory));
  requestsFact.querySelector('dd').textContent = [
    requests.cpu && `${requests.cpu} CPU`,
    requests.memory && `${requests.memory} memory`,
  ]
    .filter(Boolean)
    .join(', ');
  facts.append(runFact, requestsFact);

  const actions = item.querySelector('.actions');
  const remove = item.querySelector('.delete');
  const allowed = Math.min(EXTEND_SECONDS, allowance(view));
  const extend = button('extend', `Extend +${duration(allowed)}`, `Extend +${duration(allowed)}: ${view.name}`);
  extend.hidden = !(running && allowed >= 60);
  extend.addEventListener('click', () => extendView(view, allowed, hub));
  const restart = button('restart', 'Restart', `Restart ${view.name}`);
  restart.hidden = !(view.status.phase === 'ready' && hub.mayManage(view));
  restart.addEventListener('click', () => restartView(view.name, hub));
  actions.insertBefore(extend, remove);
  actions.insertBefore(restart, remove);
}

async function extendView(view, seconds, hub) {
  try {
    await hub.call('extendView', { name: view.name }, { seconds });
    await hub.refresh();
    hub.announce(`${view.name}: deadline extended by ${duration(seconds)}`);
  } catch (error) {
    hub.showProblem(`${view.name} was not extended: ${error.message}`);
  }
}

async function restartView(name, hub) {
  const confirmed = await confirmAction({
    title: `Restart ${name}?`,
    text: 'Its running queries end and a fresh run starts now; tables you created in it are lost.',
    action: `Restart ${name}`,
    opener: { name, className: 'restart' },
  });
  if (!confirmed) return;
  try {
    await hub.call('restartView', { name });
    await hub.refresh();
    hub.announce(`${name} restarting`);
  } catch (error) {
    hub.showProblem(`${name} was not restarted: ${error.message}`);
  }
}
