// <whatsapp-connect> — the "Connect WhatsApp" button for Meta's Embedded Signup (v4).
//
// Framework-free ES module, no build step. It loads the Facebook JS SDK once, opens the
// Embedded Signup popup with FB.login, collects the authorization code (FB.login callback)
// and the session info (a `message` event from facebook.com: WABA id, phone number id), and
// POSTs {state, code, waba_id, phone_number_id} to the gateway's /signup/exchange at once —
// the code lives about 30 seconds. It then shows the connection status the gateway returns.
//
// Attributes (see README.md): app-id, config-id, graph-version, exchange-url, state,
// config-url, sdk-url, message-origin (tests only), label.
// Events (bubbling, composed): whatsapp-connect:connected | :cancelled | :error, with detail.
// The host element's `data-status` mirrors the flow: loading, ready, waiting, exchanging,
// connected, cancelled, error.

const DEFAULT_SDK_URL = 'https://connect.facebook.net/en_US/sdk.js';
const DEFAULT_GRAPH_VERSION = 'v25.0';
const SDK_TIMEOUT_MS = 20000;
// After the code arrives, how long to wait for the session-info message before exchanging
// without it (the code expires quickly; the ids are optional for wa.complete_signup).
const SESSION_INFO_GRACE_MS = 3000;
// After FB.login reports no code, how long to wait for a CANCEL message that names the step.
const CANCEL_GRACE_MS = 1500;
const FINISH_EVENTS = new Set(['FINISH', 'FINISH_ONLY_WABA', 'FINISH_WHATSAPP_BUSINESS_APP_ONBOARDING']);

// One SDK per page, whatever the number of components.
let sdkPromise = null;

function loadSdk(url, appId, version) {
  if (sdkPromise) return sdkPromise;
  sdkPromise = new Promise((resolve, reject) => {
    const fail = (err) => {
      sdkPromise = null;
      reject(err);
    };
    if (window.FB && typeof window.FB.login === 'function') {
      // The host page already loaded and initialised the SDK: use it as it is.
      resolve(window.FB);
      return;
    }
    const timer = setTimeout(() => fail(new Error('The Facebook SDK did not load in time.')), SDK_TIMEOUT_MS);
    const previous = window.fbAsyncInit;
    window.fbAsyncInit = function () {
      clearTimeout(timer);
      try {
        window.FB.init({ appId, autoLogAppEvents: true, xfbml: false, version });
        resolve(window.FB);
      } catch (err) {
        fail(err);
      }
      if (typeof previous === 'function') previous();
    };
    const script = document.createElement('script');
    script.src = url;
    script.async = true;
    script.defer = true;
    script.crossOrigin = 'anonymous';
    script.onerror = () => {
      clearTimeout(timer);
      fail(new Error('The Facebook SDK could not be loaded (blocked or offline?).'));
    };
    document.head.appendChild(script);
  });
  return sdkPromise;
}

const STYLE = `
:host {
  --_accent: var(--wa-connect-accent, #0b6e4f);
  --_accent-text: var(--wa-connect-accent-text, #ffffff);
  --_radius: var(--wa-connect-radius, 6px);
  --_font: var(--wa-connect-font, inherit);
  --_muted: var(--wa-connect-muted, #475467);
  --_success: var(--wa-connect-success, #067647);
  --_error: var(--wa-connect-error, #b42318);
  --_focus: var(--wa-connect-focus, #1d4ed8);
  display: inline-block;
  font-family: var(--_font);
}
.root { display: flex; flex-direction: column; gap: 0.6rem; align-items: flex-start; }
button {
  font: inherit;
  font-weight: 600;
  display: inline-flex;
  align-items: center;
  gap: 0.5rem;
  padding: 0.65rem 1.1rem;
  border: 0;
  border-radius: var(--_radius);
  background: var(--_accent);
  color: var(--_accent-text);
  cursor: pointer;
}
button:hover { filter: brightness(1.08); }
button:focus-visible { outline: 3px solid var(--_focus); outline-offset: 2px; }
button[aria-disabled="true"] { opacity: 0.6; cursor: not-allowed; }
.spinner {
  width: 1em; height: 1em; border-radius: 50%;
  border: 2px solid currentColor; border-right-color: transparent;
  display: none; animation: spin 0.8s linear infinite;
}
.root[aria-busy="true"] .spinner { display: inline-block; }
@keyframes spin { to { transform: rotate(360deg); } }
@media (prefers-reduced-motion: reduce) { .spinner { animation: none; } }
.status { margin: 0; color: var(--_muted); min-height: 1.4em; max-width: 32rem; }
.status:focus { outline: none; }
.status[data-kind="success"] { color: var(--_success); }
.status[data-kind="error"] { color: var(--_error); }
.details { margin: 0; padding: 0; list-style: none; color: inherit; }
`;

class WhatsAppConnect extends HTMLElement {
  static get observedAttributes() {
    return ['label', 'state'];
  }

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = `<style>${STYLE}</style>
      <div class="root" part="root" aria-busy="false">
        <button type="button" part="button" aria-disabled="true" aria-describedby="status">
          <span class="spinner" aria-hidden="true"></span><span class="label"></span>
        </button>
        <p class="status" id="status" part="status" role="status" aria-live="polite" tabindex="-1"></p>
      </div>`;
    this._root = root.querySelector('.root');
    this._button = root.querySelector('button');
    this._label = root.querySelector('.label');
    this._status = root.querySelector('.status');
    this._onClick = this._onClick.bind(this);
    this._onMessage = this._onMessage.bind(this);
    this._session = null;
    this._ready = false;
    this._config = null;
  }

  connectedCallback() {
    this._label.textContent = this.getAttribute('label') || 'Connect WhatsApp';
    this._button.addEventListener('click', this._onClick);
    window.addEventListener('message', this._onMessage);
    this._prepare();
  }

  disconnectedCallback() {
    this._button.removeEventListener('click', this._onClick);
    window.removeEventListener('message', this._onMessage);
    this._clearTimers();
    this._session = null;
  }

  attributeChangedCallback(name) {
    if (name === 'label' && this._label) {
      this._label.textContent = this.getAttribute('label') || 'Connect WhatsApp';
    }
  }

  // ---- setup ---------------------------------------------------------------------------

  async _prepare() {
    this._setFlow('loading');
    this._show('Loading…', 'muted');
    try {
      const config = await this._resolveConfig();
      if (!config.appId || !config.configId) {
        throw new Error('Missing app id or configuration id.');
      }
      if (!this.getAttribute('state')) {
        throw new Error('This page has no signup state. Reload it from your account page.');
      }
      if (!this.getAttribute('exchange-url')) {
        throw new Error('Missing exchange-url.');
      }
      this._config = config;
      await loadSdk(this.getAttribute('sdk-url') || DEFAULT_SDK_URL, config.appId, config.graphVersion);
      this._ready = true;
      this._button.setAttribute('aria-disabled', 'false');
      this._setFlow('ready');
      this._show('', 'muted');
    } catch (err) {
      this._setFlow('error');
      this._show(`WhatsApp signup is unavailable: ${messageOf(err)}`, 'error');
      this._emit('error', { stage: 'setup', message: messageOf(err) });
    }
  }

  async _resolveConfig() {
    let appId = this.getAttribute('app-id');
    let configId = this.getAttribute('config-id');
    let graphVersion = this.getAttribute('graph-version');
    const configUrl = this.getAttribute('config-url');
    if (configUrl && (!appId || !configId || !graphVersion)) {
      const res = await fetch(configUrl, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      const body = await readJson(res);
      if (!res.ok) throw new Error(errorText(body, res.status));
      appId = appId || body.app_id;
      configId = configId || body.config_id;
      graphVersion = graphVersion || body.graph_api_version || body.graph_version;
    }
    return { appId, configId, graphVersion: graphVersion || DEFAULT_GRAPH_VERSION };
  }

  // ---- the flow ------------------------------------------------------------------------

  _onClick() {
    if (!this._ready || (this._session && !this._session.done)) return;
    const FB = window.FB;
    const session = {
      code: null,
      info: null,
      done: false,
      exchanging: false,
      timers: [],
    };
    this._session = session;
    this._setBusy(true);
    this._setFlow('waiting');
    this._show('Complete the signup in the Facebook window…', 'muted');
    try {
      // FB.login must run synchronously inside the click handler, or popup blockers win.
      FB.login((response) => this._onLogin(session, response), {
        config_id: this._config.configId,
        response_type: 'code',
        override_default_response_type: true,
        extras: { setup: {}, featureType: '', sessionInfoVersion: '3' },
      });
    } catch (err) {
      this._fail(session, 'login', `Could not open the Facebook window: ${messageOf(err)}`);
    }
  }

  _onLogin(session, response) {
    if (session !== this._session || session.done) return;
    const code = response && response.authResponse && response.authResponse.code;
    if (code) {
      session.code = code;
      if (session.info) {
        this._exchange(session);
      } else {
        this._show('Finishing the connection…', 'muted');
        session.timers.push(setTimeout(() => this._exchange(session), SESSION_INFO_GRACE_MS));
      }
      return;
    }
    // No code: the popup was closed or the user cancelled. A CANCEL message naming the step
    // may still be on its way.
    session.timers.push(
      setTimeout(() => {
        if (!session.done) this._cancelled(session, null);
      }, CANCEL_GRACE_MS),
    );
  }

  _originAllowed(origin) {
    const exact = this.getAttribute('message-origin');
    if (exact) return origin === exact;
    try {
      const u = new URL(origin);
      return u.protocol === 'https:' && (u.hostname === 'facebook.com' || u.hostname.endsWith('.facebook.com'));
    } catch {
      return false;
    }
  }

  _onMessage(event) {
    const session = this._session;
    if (!session || session.done || !this._originAllowed(event.origin)) return;
    let data = event.data;
    if (typeof data === 'string') {
      try {
        data = JSON.parse(data);
      } catch {
        return;
      }
    }
    if (!data || typeof data !== 'object' || data.type !== 'WA_EMBEDDED_SIGNUP') return;
    const payload = data.data || {};
    if (FINISH_EVENTS.has(data.event)) {
      session.info = {
        event: data.event,
        waba_id: payload.waba_id || null,
        phone_number_id: data.event === 'FINISH_ONLY_WABA' ? null : payload.phone_number_id || null,
      };
      if (session.code) this._exchange(session);
    } else if (data.event === 'CANCEL') {
      if (payload.error_message) {
        const id = payload.error_id ? ` (error ${payload.error_id})` : '';
        this._fail(session, 'signup', `Meta reported an error: ${payload.error_message}${id}`, {
          error_id: payload.error_id || null,
          session_id: payload.session_id || null,
        });
      } else {
        this._cancelled(session, payload.current_step || null);
      }
    }
  }

  async _exchange(session) {
    if (session !== this._session || session.done || session.exchanging || !session.code) return;
    session.exchanging = true;
    this._clearTimers();
    this._setFlow('exchanging');
    this._show('Connecting your WhatsApp account…', 'muted');
    const info = session.info || {};
    let res;
    let body;
    try {
      res = await fetch(this.getAttribute('exchange-url'), {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({
          state: this.getAttribute('state'),
          code: session.code,
          waba_id: info.waba_id || null,
          phone_number_id: info.phone_number_id || null,
        }),
      });
      body = await readJson(res);
    } catch (err) {
      this._fail(session, 'exchange', `Could not reach the server: ${messageOf(err)}`);
      return;
    }
    // The code is single-use; forget it whatever happened.
    session.code = null;
    if (!res.ok) {
      // 4xx and 502 carry a message meant for the user (bad state, Graph refusal); other
      // 5xx are the server's own trouble.
      const why =
        res.status < 500 || res.status === 502
          ? errorText(body, res.status)
          : `the server could not complete it (HTTP ${res.status}); please try again`;
      this._fail(session, 'exchange', `Could not finish connecting: ${why}`, {
        status: res.status,
        error: (body && body.error) || null,
      });
      return;
    }
    this._connected(session, body || {}, info.event || null);
  }

  // ---- outcomes ------------------------------------------------------------------------

  _connected(session, status, event) {
    this._finish(session);
    const phones = Array.isArray(status.phone_numbers) ? status.phone_numbers : [];
    const phone = phones[0] || {};
    const state = status.state || 'unknown';
    let text;
    let kind = 'success';
    if (state === 'connected' || state === 'pending') {
      this._setFlow('connected');
      if (phones.length === 0) {
        text = 'WhatsApp account connected; add a phone number to start messaging.';
      } else if (state === 'pending') {
        text = 'WhatsApp connection pending; this can take a few minutes.';
      } else {
        const who = [phone.verified_name, phone.display_phone_number].filter(Boolean).join(' · ');
        text = `WhatsApp connected${who ? `: ${who}` : ''}.`;
      }
    } else {
      const why = status.last_error && (status.last_error.message || status.last_error.title);
      text = `The connection needs attention (${state.replace(/_/g, ' ')})${why ? `: ${why}` : ''}.`;
      kind = 'error';
      this._setFlow('error');
    }
    this._show(text, kind, true);
    this._emit(kind === 'error' ? 'error' : 'connected', kind === 'error' ? { stage: 'status', status } : { status, event });
  }

  _cancelled(session, step) {
    this._finish(session);
    this._setFlow('cancelled');
    const where = step ? ` at ${humanStep(step)}` : '';
    this._show(`Signup cancelled${where}. You can start again at any time.`, 'muted', true);
    this._emit('cancelled', { current_step: step });
  }

  _fail(session, stage, message, extra = {}) {
    this._finish(session);
    this._setFlow('error');
    this._show(message, 'error', true);
    this._emit('error', { stage, message, ...extra });
  }

  _finish(session) {
    session.done = true;
    session.code = null;
    this._clearTimers();
    this._setBusy(false);
  }

  // ---- helpers -------------------------------------------------------------------------

  _clearTimers() {
    const s = this._session;
    if (!s) return;
    for (const t of s.timers) clearTimeout(t);
    s.timers = [];
  }

  _setBusy(busy) {
    this._root.setAttribute('aria-busy', String(busy));
    this.setAttribute('aria-busy', String(busy));
    this._button.setAttribute('aria-disabled', String(busy || !this._ready));
  }

  _setFlow(flow) {
    this.dataset.status = flow;
  }

  _show(text, kind, final = false) {
    this._status.textContent = text;
    this._status.dataset.kind = kind;
    // A final result moves focus to the message (the popup took focus away), so keyboard
    // and screen-reader users land on the outcome; the button is one Tab away.
    if (final && text) this._status.focus({ preventScroll: false });
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(`whatsapp-connect:${name}`, { detail, bubbles: true, composed: true }));
  }
}

async function readJson(res) {
  try {
    return await res.json();
  } catch {
    return null;
  }
}

function errorText(body, status) {
  const err = body && body.error;
  if (err && err.message) return err.hint ? `${err.message}. ${err.hint}` : err.message;
  return `HTTP ${status}`;
}

function messageOf(err) {
  return (err && err.message) || String(err);
}

function humanStep(step) {
  return String(step).toLowerCase().replace(/_/g, ' ');
}

if (!customElements.get('whatsapp-connect')) {
  customElements.define('whatsapp-connect', WhatsAppConnect);
}

export { WhatsAppConnect };
