// <run-recovery-dialog>: the recovery prompt as a framework-free custom element
// (plain pages, Angular, React, …). A real modal (a native <dialog> opened with
// showModal(), role dialog, labelled by its heading), keyboard usable (focus
// moves in, Tab stays inside, Escape = dismiss), one DOM event per decision.
//
//   import '@run-recovery/web/dialog.js';
//   const dialog = document.querySelector('run-recovery-dialog');
//   dialog.recover = (runId, action, orphan) => recoverInTheWorker(runId, action, orphan.lease);
//   dialog.show(orphans);              // from orphans(db) in the Worker
//   dialog.addEventListener('run-recovery-decision', (e) => e.detail.outcome);
//
// `recover` must return (a promise of) the outcome, or reject with an error
// whose `reason` is one of RecoveryRefusedError's codes: the dialog then says
// what happened in the run's row instead of crashing.

const TITLE = 'A protocol run was interrupted';

const ACTION_LABEL = { resume: 'Resume', fail: 'Mark as failed', dismiss: 'Dismiss' };
const ACTION_PROGRESS = { resume: 'Resuming…', fail: 'Marking as failed…', dismiss: 'Dismissing…' };

/** "42 seconds", "1 minute", "3 hours", "2 days". */
export function formatAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const unit = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
  if (s < 60) return unit(s, 'second');
  const m = Math.floor(s / 60);
  if (m < 60) return unit(m, 'minute');
  const h = Math.floor(m / 60);
  if (h < 48) return unit(h, 'hour');
  return unit(Math.floor(h / 24), 'day');
}

/** What the dialog says when the database refused a decision. */
export function refusalText(action, reason, message) {
  switch (reason) {
    case 'already-recovered':
    case 'stale-lease':
      return 'Another tab or device already took this run over. Nothing was changed here.';
    case 'still-alive':
      return 'This run is alive again: another tab resumed it, or its executor came back. Nothing was changed here.';
    case 'not-live':
      return 'This run is no longer running (it completed, failed or was cancelled meanwhile). Nothing was changed here.';
    case 'no-such-run':
      return 'This run no longer exists in the database.';
    case 'not-json-object':
      return "This run's metadata is not a JSON object, so it is left exactly as it is: correct it in the app, then decide.";
    case 'too-many-resumes':
      return 'This run was resumed too many times already. Mark it as failed, or dismiss it.';
    default:
      return `Could not ${ACTION_LABEL[action]?.toLowerCase() ?? action} this run: ${message ?? 'unknown error'}`;
  }
}

const STYLE = `
:host { all: initial; }
dialog {
  box-sizing: border-box; width: min(40rem, calc(100vw - 2rem)); max-height: calc(100vh - 2rem);
  padding: 0; border: 1px solid #cbd5e1; border-radius: 0.75rem; overflow: auto;
  background: #ffffff; color: #0f172a; box-shadow: 0 1.5rem 3rem rgba(15, 23, 42, 0.35);
  font: 400 1rem/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
}
dialog::backdrop { background: rgba(15, 23, 42, 0.55); }
header { display: flex; gap: 0.75rem; align-items: flex-start; padding: 1.25rem 1.5rem 0.5rem; border-top: 0.375rem solid #d97706; }
.icon {
  flex: none; display: grid; place-items: center; width: 2.25rem; height: 2.25rem; border-radius: 50%;
  background: #fef3c7; color: #92400e; font-weight: 700; font-size: 1.25rem;
}
h2 { margin: 0.125rem 0 0; font-size: 1.25rem; line-height: 1.3; font-weight: 650; }
.intro { margin: 0; padding: 0 1.5rem 0.75rem 4.5rem; color: #334155; }
ul { list-style: none; margin: 0; padding: 0 1.5rem; display: grid; gap: 0.75rem; }
li { border: 1px solid #e2e8f0; border-radius: 0.5rem; padding: 0.875rem 1rem; background: #f8fafc; }
li[data-state="done"] { background: #f0fdf4; border-color: #bbf7d0; }
li[data-state="refused"] { background: #fff7ed; border-color: #fed7aa; }
.run-head { display: flex; flex-wrap: wrap; gap: 0.5rem; align-items: baseline; justify-content: space-between; }
.name { font-weight: 650; font-size: 1.0625rem; overflow-wrap: anywhere; }
.status {
  font: 600 0.75rem/1.6 ui-monospace, "DejaVu Sans Mono", monospace; letter-spacing: 0.03em; text-transform: uppercase;
  padding: 0 0.5rem; border-radius: 999px; background: #e0e7ff; color: #3730a3;
}
.facts { margin: 0.375rem 0 0; color: #334155; display: flex; flex-wrap: wrap; gap: 0.25rem 1.25rem; }
.facts span { white-space: nowrap; }
.facts span + span::before { content: '·'; margin-right: 1.25rem; color: #94a3b8; }
.id { margin: 0.25rem 0 0; font: 0.8125rem/1.4 ui-monospace, "DejaVu Sans Mono", monospace; color: #64748b; overflow-wrap: anywhere; }
.message { margin: 0.5rem 0 0; min-height: 0; font-weight: 500; }
.message:empty { display: none; }
li[data-state="refused"] .message { color: #9a3412; }
li[data-state="done"] .message { color: #166534; }
.actions { display: flex; flex-wrap: wrap; gap: 0.5rem; margin-top: 0.75rem; }
button {
  font: inherit; font-weight: 600; min-height: 2.5rem; padding: 0.375rem 1rem; border-radius: 0.375rem; cursor: pointer;
  border: 1px solid #94a3b8; background: #ffffff; color: #0f172a;
}
button:focus-visible { outline: 3px solid #2563eb; outline-offset: 2px; }
button:disabled { opacity: 0.55; cursor: progress; }
button.resume { background: #1d4ed8; border-color: #1d4ed8; color: #ffffff; }
button.resume:hover:not(:disabled) { background: #1e40af; }
button.fail { color: #b91c1c; border-color: #b91c1c; }
button.fail:hover:not(:disabled) { background: #fef2f2; }
button.dismiss:hover:not(:disabled), button.close:hover { background: #f1f5f9; }
footer { display: flex; gap: 1rem; align-items: center; justify-content: space-between; padding: 1rem 1.5rem 1.25rem; }
.hint { margin: 0; font-size: 0.875rem; color: #475569; }
[hidden] { display: none !important; }
`;

export class RunRecoveryDialog extends HTMLElement {
  #root;
  #dialog;
  #list;
  #close;
  #rows = new Map(); // runId -> { orphan, li, facts, message, buttons, state }
  #ticker = null;
  #shownAt = 0;
  #escaping = false;
  /** (runId, action, orphan) => outcome | Promise<outcome>; set by the app. */
  recover = null;

  constructor() {
    super();
    this.#root = this.attachShadow({ mode: 'open' });
    this.#root.innerHTML = `<style>${STYLE}</style>
<dialog aria-labelledby="title" aria-describedby="intro" part="dialog">
  <header><span class="icon" aria-hidden="true">!</span><h2 id="title">${TITLE}</h2></header>
  <p class="intro" id="intro">The tab or device that was running it stopped sending signs of life. Nothing has been changed yet. Resume, mark as failed, or dismiss?</p>
  <ul></ul>
  <footer>
    <p class="hint">Resume continues from the last checkpoint. Mark as failed ends the run. Dismiss hides it until it sends a heartbeat again.</p>
    <button type="button" class="close" hidden>Close</button>
  </footer>
</dialog>`;
    this.#dialog = this.#root.querySelector('dialog');
    this.#list = this.#root.querySelector('ul');
    this.#close = this.#root.querySelector('.close');
    this.#close.addEventListener('click', () => this.close());
    this.#dialog.addEventListener('keydown', (e) => this.#onKey(e));
    // Escape, or the browser's own close request: dismiss, never a silent close.
    this.#dialog.addEventListener('cancel', (e) => {
      e.preventDefault();
      this.#escape();
    });
    this.#dialog.addEventListener('close', () => {
      if (this.#actionable().length) this.#dialog.showModal(); // closed from outside while decisions remain
    });
  }

  /** The orphans shown (objects as orphans() returns them). */
  get orphans() {
    return [...this.#rows.values()].map((r) => r.orphan);
  }

  get open() {
    return this.#dialog.open;
  }

  /** Opens the dialog for `orphans` (does nothing for an empty list). */
  show(orphans) {
    this.#list.replaceChildren();
    this.#rows.clear();
    this.#close.hidden = true;
    if (!orphans || orphans.length === 0) {
      this.close();
      return;
    }
    this.#shownAt = Date.now();
    orphans.forEach((o, i) => this.#addRow(o, i));
    this.#tick();
    clearInterval(this.#ticker);
    this.#ticker = setInterval(() => this.#tick(), 1000);
    if (!this.#dialog.open) this.#dialog.showModal();
    this.#focusNext();
    if (globalThis.performance?.mark) performance.mark('run-recovery-dialog-shown');
    this.dispatchEvent(new CustomEvent('run-recovery-open', { bubbles: true, composed: true, detail: { orphans } }));
  }

  close() {
    clearInterval(this.#ticker);
    this.#ticker = null;
    const remaining = this.#actionable().map((r) => r.orphan);
    this.#rows.clear();
    if (!this.#dialog.open) return;
    this.#dialog.close();
    this.dispatchEvent(new CustomEvent('run-recovery-close', { bubbles: true, composed: true, detail: { undecided: remaining } }));
  }

  disconnectedCallback() {
    clearInterval(this.#ticker);
  }

  #addRow(orphan, i) {
    const li = document.createElement('li');
    const nameId = `run-${i}-name`;
    li.setAttribute('role', 'group');
    li.setAttribute('aria-labelledby', nameId);
    li.dataset.runId = String(orphan.runId);
    li.dataset.state = 'open';
    li.innerHTML = `<div class="run-head"><span class="name" id="${nameId}"></span><span class="status"></span></div>
<p class="facts"><span class="seen"></span><span class="step"></span></p>
<p class="id"></p>
<p class="message" role="status" aria-live="polite"></p>
<div class="actions">
  <button type="button" class="resume" data-action="resume">Resume</button>
  <button type="button" class="fail" data-action="fail">Mark as failed</button>
  <button type="button" class="dismiss" data-action="dismiss">Dismiss</button>
</div>`;
    li.querySelector('.name').textContent = orphan.name || 'Unnamed run';
    li.querySelector('.status').textContent = String(orphan.status ?? '');
    li.querySelector('.step').textContent =
      orphan.checkpointStep === null || orphan.checkpointStep === undefined ? 'before its first step' : `after step ${orphan.checkpointStep}`;
    li.querySelector('.id').textContent = `run ${orphan.runId}`;
    const buttons = [...li.querySelectorAll('button')];
    for (const b of buttons) b.addEventListener('click', () => this.#decide(orphan.runId, b.dataset.action));
    this.#list.append(li);
    this.#rows.set(orphan.runId, { orphan, li, seen: li.querySelector('.seen'), message: li.querySelector('.message'), buttons, state: 'open' });
  }

  #tick() {
    const now = Date.now();
    for (const r of this.#rows.values()) {
      const o = r.orphan;
      const age = Number.isFinite(o.lastHeartbeat) ? now - o.lastHeartbeat : (o.ageMs ?? 0) + (now - this.#shownAt);
      r.seen.textContent = o.lastHeartbeat === null ? 'never seen alive' : `last seen ${formatAge(age)} ago`;
    }
  }

  #actionable() {
    return [...this.#rows.values()].filter((r) => r.state === 'open' || r.state === 'busy');
  }

  async #decide(runId, action) {
    const r = this.#rows.get(runId);
    if (!r || r.state !== 'open') return;
    if (typeof this.recover !== 'function') throw new Error('<run-recovery-dialog>: set dialog.recover = (runId, action, orphan) => outcome first');
    r.state = 'busy';
    r.li.setAttribute('aria-busy', 'true');
    for (const b of r.buttons) b.disabled = true;
    r.message.textContent = ACTION_PROGRESS[action];
    try {
      const outcome = await this.recover(runId, action, r.orphan);
      this.#settle(r, 'done', this.#doneText(action, outcome));
      this.dispatchEvent(new CustomEvent('run-recovery-decision', { bubbles: true, composed: true, detail: { runId, action, outcome, orphan: r.orphan } }));
    } catch (error) {
      const reason = error?.reason;
      if (reason) {
        this.#settle(r, 'refused', refusalText(action, reason, error.message));
        this.dispatchEvent(
          new CustomEvent('run-recovery-refused', { bubbles: true, composed: true, detail: { runId, action, reason, message: String(error.message ?? error), orphan: r.orphan } }),
        );
      } else {
        // Not a refusal (the database is busy, a bug): say so, keep the choice open.
        r.state = 'open';
        r.li.removeAttribute('aria-busy');
        for (const b of r.buttons) b.disabled = false;
        r.message.textContent = refusalText(action, null, String(error?.message ?? error));
        r.message.setAttribute('role', 'alert');
        this.dispatchEvent(new CustomEvent('run-recovery-error', { bubbles: true, composed: true, detail: { runId, action, error } }));
        r.buttons[0].focus();
        return;
      }
    }
    if (!this.#actionable().length && [...this.#rows.values()].every((x) => x.state === 'done')) {
      this.close();
    } else {
      this.#focusNext();
    }
  }

  #doneText(action, outcome) {
    if (action === 'resume') return `Resumed from step ${outcome?.checkpointStep ?? 0} (lease ${outcome?.lease ?? '?'}).`;
    if (action === 'fail') return 'Marked as failed.';
    return 'Dismissed until it sends a heartbeat again.';
  }

  #settle(r, state, text) {
    r.state = state;
    r.li.dataset.state = state;
    r.li.removeAttribute('aria-busy');
    r.message.textContent = text;
    if (state === 'refused') r.message.setAttribute('role', 'alert');
    for (const b of r.buttons) b.remove();
    r.buttons = [];
  }

  #focusNext() {
    const next = this.#actionable().find((r) => r.state === 'open');
    if (next) {
      next.buttons[0].focus();
    } else {
      this.#close.hidden = false;
      this.#close.focus();
    }
  }

  #focusables() {
    return [...this.#root.querySelectorAll('button')].filter((b) => !b.disabled && !b.hidden && b.isConnected);
  }

  #onKey(e) {
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      this.#escape();
    } else if (e.key === 'Tab') {
      const f = this.#focusables();
      if (!f.length) {
        e.preventDefault();
        return;
      }
      const i = f.indexOf(this.#root.activeElement);
      if (e.shiftKey && (i <= 0)) {
        e.preventDefault();
        f[f.length - 1].focus();
      } else if (!e.shiftKey && (i === -1 || i === f.length - 1)) {
        e.preventDefault();
        f[0].focus();
      }
    }
  }

  /** Escape: dismiss every orphan still open (they come back when they heartbeat again); close when none is left. */
  async #escape() {
    if (this.#escaping) return;
    const open = this.#actionable().filter((r) => r.state === 'open');
    if (!open.length) {
      if (!this.#actionable().length) this.close();
      return;
    }
    this.#escaping = true;
    try {
      for (const r of open) await this.#decide(r.orphan.runId, 'dismiss');
    } finally {
      this.#escaping = false;
    }
  }
}

if (!customElements.get('run-recovery-dialog')) customElements.define('run-recovery-dialog', RunRecoveryDialog);
