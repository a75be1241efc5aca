// bffgate demo SPA. It never sees a token: the gateway keeps them and the
// browser holds one HttpOnly session cookie. Every call sends the anti-CSRF
// header and the same-origin cookie; nothing is written to web storage or
// any browser database. All text reaches the page through textContent,
// never through HTML parsing.

const CSRF_HEADER = 'X-CSRF';
const TIMEOUT_MS = 20000;
const MAX_TITLE = 200;

const $ = (id) => document.getElementById(id);

const el = {
  status: $('status'),
  login: $('login'),
  logout: $('logout'),
  signedOut: $('signed-out'),
  signedIn: $('signed-in'),
  userName: $('user-name'),
  userSub: $('user-sub'),
  sessionExpires: $('session-expires'),
  claims: $('claims'),
  callApi: $('call-api'),
  apiResult: $('api-result'),
  items: $('items'),
  itemsEmpty: $('items-empty'),
  itemForm: $('item-form'),
  newItemTitle: $('new-item-title'),
  addItem: $('add-item'),
};

/** GatewayError is a failed call, with the gateway's (or API's) JSON body. */
class GatewayError extends Error {
  constructor(status, body, message) {
    super(message);
    this.name = 'GatewayError';
    this.status = status;
    this.body = body;
  }
  get code() {
    return this.body && typeof this.body.error === 'string' ? this.body.error : '';
  }
}

// ---- HTTP ---------------------------------------------------------------

async function request(method, path, json) {
  const headers = { [CSRF_HEADER]: '1', Accept: 'application/json' };
  const init = {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    // The gateway never redirects an API call; a redirect would be followed
    // into the provider and fail as a CORS error, so it is an error here.
    redirect: 'manual',
    signal: AbortSignal.timeout(TIMEOUT_MS),
  };
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    const msg = err && err.name === 'TimeoutError'
      ? `The gateway did not answer within ${TIMEOUT_MS / 1000} seconds.`
      : 'The gateway cannot be reached. Check your connection, or whether bffgate is running.';
    throw new GatewayError(0, null, msg);
  }
  if (res.type === 'opaqueredirect') {
    throw new GatewayError(0, null, 'The gateway answered with an unexpected redirect.');
  }
  let body = null;
  const type = res.headers.get('Content-Type') || '';
  if (res.status !== 204 && type.includes('json')) {
    try {
      body = await res.json();
    } catch {
      body = null;
    }
  }
  if (!res.ok) {
    throw new GatewayError(res.status, body, describe(res.status, body));
  }
  return body;
}

/** describe turns a gateway or API error into words. */
function describe(status, body) {
  const code = body && typeof body.error === 'string' ? body.error : '';
  const detail = body && typeof body.error_description === 'string' ? body.error_description : '';
  const withDetail = (msg) => (detail ? `${msg} (${detail})` : msg);
  switch (status) {
    case 401:
      if (code === 'session_expired') return 'Your session has expired. Please log in again.';
      if (code === 'invalid_token') return withDetail('The API did not accept the access token.');
      return 'You are not logged in.';
    case 403:
      if (code.includes('csrf')) {
        return withDetail('The gateway refused the request: the anti-CSRF header was missing or the request came from another site.');
      }
      if (code === 'insufficient_scope') return withDetail('Your access token lacks a scope the API requires.');
      return withDetail('The request is not allowed.');
    case 404:
      return withDetail('Not found.');
    case 409:
    case 413:
    case 415:
    case 422:
    case 400:
      return withDetail(`The request was refused (${status}).`);
    case 429:
      return withDetail('Too many requests. Wait a moment and try again.');
    case 502:
      return withDetail('The gateway could not reach the API (502 Bad Gateway).');
    case 503:
      return withDetail('A service the gateway needs is temporarily unavailable (503). Try again in a moment.');
    case 504:
      return withDetail('The API took too long to answer (504 Gateway Timeout).');
    default:
      return withDetail(`Unexpected answer from the gateway (status ${status}).`);
  }
}

// ---- status line ---------------------------------------------------------

function setStatus(text, kind = '') {
  el.status.textContent = text;
  el.status.className = kind ? `status ${kind}` : 'status';
}

/** busy disables button while fn runs. */
async function busy(button, fn) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

// ---- session -------------------------------------------------------------

function loginHref() {
  let path = location.pathname + location.search;
  // returnUrl must be a local path; the gateway refuses anything else.
  if (!path.startsWith('/') || path.startsWith('//')) path = '/';
  return `/bff/login?returnUrl=${encodeURIComponent(path)}`;
}

/** claimList reads Duende-style [{type, value}] (or a plain object). */
function claimList(body) {
  if (Array.isArray(body)) {
    return body.filter((c) => c && typeof c.type === 'string');
  }
  if (body && typeof body === 'object') {
    return Object.entries(body).map(([type, value]) => ({ type, value }));
  }
  return [];
}

function claim(list, type) {
  const c = list.find((x) => x.type === type);
  return c ? c.value : undefined;
}

/** localURL accepts only a URL on this origin (the logout link). */
function localURL(value) {
  if (typeof value !== 'string' || value === '') return null;
  try {
    const u = new URL(value, location.origin);
    return u.origin === location.origin ? u.pathname + u.search : null;
  } catch {
    return null;
  }
}

let expiresAt = null;
let expiryTimer = null;

function showExpiry() {
  if (expiresAt === null) {
    el.sessionExpires.textContent = 'unknown';
    el.sessionExpires.removeAttribute('datetime');
    return;
  }
  const left = Math.round((expiresAt - Date.now()) / 1000);
  const when = new Date(expiresAt);
  el.sessionExpires.dateTime = when.toISOString();
  if (left <= 0) {
    el.sessionExpires.textContent = `expired at ${when.toLocaleTimeString()}`;
    return;
  }
  const rel = left >= 3600
    ? `${Math.floor(left / 3600)} h ${Math.floor((left % 3600) / 60)} min`
    : left >= 60 ? `${Math.floor(left / 60)} min` : `${left} s`;
  el.sessionExpires.textContent = `at ${when.toLocaleTimeString()} (in ${rel}, if idle)`;
}

function showSignedIn(list) {
  const sub = claim(list, 'sub');
  const name = claim(list, 'name') || claim(list, 'preferred_username') || claim(list, 'email') || sub || 'unknown user';
  el.userName.textContent = String(name);
  el.userSub.textContent = sub === undefined ? '(none)' : String(sub);

  const seconds = Number(claim(list, 'bff:session_expires_in'));
  expiresAt = Number.isFinite(seconds) ? Date.now() + seconds * 1000 : null;
  showExpiry();
  clearInterval(expiryTimer);
  expiryTimer = setInterval(showExpiry, 15000);

  el.claims.replaceChildren(...list.map((c) => {
    const tr = document.createElement('tr');
    const th = document.createElement('td');
    const td = document.createElement('td');
    th.textContent = c.type;
    td.textContent = typeof c.value === 'string' ? c.value : JSON.stringify(c.value);
    tr.append(th, td);
    return tr;
  }));

  const logout = localURL(claim(list, 'bff:logout_url'));
  el.logout.href = logout || '/bff/logout';
  el.logout.hidden = logout === null;
  el.login.hidden = true;
  el.signedOut.hidden = true;
  el.signedIn.hidden = false;
}

/** showSignedOut clears everything a previous session showed. */
function showSignedOut() {
  clearInterval(expiryTimer);
  expiresAt = null;
  el.userName.textContent = '';
  el.userSub.textContent = '';
  el.sessionExpires.textContent = '';
  el.claims.replaceChildren();
  el.apiResult.replaceChildren();
  el.items.replaceChildren();
  el.itemsEmpty.hidden = true;
  el.logout.hidden = true;
  el.logout.href = '/bff/logout';
  const href = loginHref();
  el.login.href = href;
  for (const a of document.querySelectorAll('[data-login]')) a.href = href;
  el.login.hidden = false;
  el.signedIn.hidden = true;
  el.signedOut.hidden = false;
}

/** fail reports a failed action; a lost session switches to the login view. */
function fail(action, err) {
  const msg = err instanceof GatewayError ? err.message : String(err);
  if (err instanceof GatewayError && err.status === 401 && err.code !== 'invalid_token') {
    showSignedOut();
    setStatus(`${action}: ${msg}`, 'error');
    el.login.focus();
    return;
  }
  setStatus(`${action}: ${msg}`, 'error');
}

// The gateway's post-logout redirect lands here with ?signed_out=1 (the
// zero-config default of gateway.post_logout_redirect): say so once, then
// drop the parameter so that a reload or a bookmark does not say it again.
const justSignedOut = new URLSearchParams(location.search).has('signed_out');
if (justSignedOut) history.replaceState(null, '', location.pathname + location.hash);

async function loadUser(afterLogout = false) {
  setStatus('Checking your session…');
  let body;
  try {
    body = await request('GET', '/bff/user');
  } catch (err) {
    if (err instanceof GatewayError && err.status === 401) {
      showSignedOut();
      if (err.code === 'session_expired') setStatus(describe(401, err.body));
      else setStatus(afterLogout ? 'You have been signed out.' : 'You are not logged in.', afterLogout ? 'ok' : '');
      return;
    }
    showSignedOut();
    fail('Could not read your session', err);
    return;
  }
  showSignedIn(claimList(body));
  setStatus('Logged in.', 'ok');
  await loadItems();
}

// ---- API -----------------------------------------------------------------

function fact(dl, term, value) {
  const dt = document.createElement('dt');
  const dd = document.createElement('dd');
  dt.textContent = term;
  dd.textContent = value;
  dl.append(dt, dd);
}

function tokenFormat(t) {
  if (!t || typeof t !== 'object') return 'unknown';
  const typ = t.typ ? `, typ ${t.typ}` : '';
  if (t.format === 'encrypted') return `encrypted JWE (${t.alg || '?'} + ${t.enc || '?'}${typ})`;
  if (t.format === 'signed') return `signed JWT (${t.alg || '?'}${typ})`;
  return String(t.format || 'unknown');
}

function showWhoami(w) {
  const dl = document.createElement('dl');
  dl.className = 'facts';
  fact(dl, 'Subject', String(w.subject ?? ''));
  fact(dl, 'Client', String(w.client_id ?? '(none)'));
  fact(dl, 'Scopes', Array.isArray(w.scopes) && w.scopes.length ? w.scopes.join(' ') : '(none)');
  fact(dl, 'Audience', Array.isArray(w.audience) && w.audience.length ? w.audience.join(', ') : '(none)');
  if (w.expires_at) {
    const at = new Date(w.expires_at);
    const inS = Number(w.expires_in);
    fact(dl, 'Token expires', `${at.toLocaleTimeString()}${Number.isFinite(inS) ? ` (in ${inS} s)` : ''}`);
  }
  const t = w.token || {};
  fact(dl, 'Token format', tokenFormat(t));
  fact(dl, 'Verified by', t.verified_by === 'introspection' ? 'introspection at the issuer (RFC 7662)' : 'signature, with the issuer\'s JWKS');
  if (w.jti_sha256) fact(dl, 'Token id (SHA-256 prefix)', w.jti_sha256);

  const details = document.createElement('details');
  const summary = document.createElement('summary');
  summary.textContent = 'Raw answer';
  const pre = document.createElement('pre');
  pre.textContent = JSON.stringify(w, null, 2);
  details.append(summary, pre);
  el.apiResult.replaceChildren(dl, details);
}

async function callApi() {
  await busy(el.callApi, async () => {
    setStatus('Calling the API…');
    try {
      const w = await request('GET', '/api/whoami');
      showWhoami(w || {});
      setStatus('The API answered.', 'ok');
    } catch (err) {
      el.apiResult.replaceChildren();
      fail('Calling the API failed', err);
    }
  });
}

// ---- items ---------------------------------------------------------------

function itemElement(item) {
  const li = document.createElement('li');
  li.dataset.id = item.id;
  const title = document.createElement('span');
  title.textContent = item.title;
  const del = document.createElement('button');
  del.type = 'button';
  del.className = 'delete-item';
  del.textContent = 'Delete';
  del.setAttribute('aria-label', `Delete “${item.title}”`);
  del.addEventListener('click', () => deleteItem(li, item, del));
  li.append(title, del);
  return li;
}

function renderItems(list) {
  el.items.replaceChildren(...list.map(itemElement));
  el.itemsEmpty.hidden = list.length > 0;
}

async function loadItems() {
  try {
    const data = await request('GET', '/api/items');
    renderItems(data && Array.isArray(data.items) ? data.items : []);
  } catch (err) {
    fail('Loading your items failed', err);
  }
}

async function addItem(event) {
  event.preventDefault();
  const title = el.newItemTitle.value.trim();
  if (title === '' || title.length > MAX_TITLE) {
    el.newItemTitle.setAttribute('aria-invalid', 'true');
    setStatus(title === '' ? 'Type a title for the new item first.' : `A title has at most ${MAX_TITLE} characters.`, 'error');
    el.newItemTitle.focus();
    return;
  }
  el.newItemTitle.removeAttribute('aria-invalid');
  await busy(el.addItem, async () => {
    try {
      const item = await request('POST', '/api/items', { title });
      el.items.append(itemElement(item));
      el.itemsEmpty.hidden = true;
      el.newItemTitle.value = '';
      setStatus(`Added “${item.title}”.`, 'ok');
    } catch (err) {
      fail('Adding the item failed', err);
    }
  });
  el.newItemTitle.focus();
}

async function deleteItem(li, item, button) {
  await busy(button, async () => {
    try {
      await request('DELETE', `/api/items/${encodeURIComponent(item.id)}`);
    } catch (err) {
      if (!(err instanceof GatewayError && err.status === 404)) {
        fail('Deleting the item failed', err);
        return;
      }
      // Already gone (another tab): drop it here too.
    }
    const next = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    el.itemsEmpty.hidden = el.items.children.length > 0;
    setStatus(`Deleted “${item.title}”.`, 'ok');
    const focusTarget = next ? next.querySelector('.delete-item') : el.newItemTitle;
    focusTarget.focus();
  });
}

// ---- start ---------------------------------------------------------------

el.callApi.addEventListener('click', callApi);
el.itemForm.addEventListener('submit', addItem);
el.newItemTitle.addEventListener('input', () => el.newItemTitle.removeAttribute('aria-invalid'));
// Back/forward cache: a page restored after logout must not show the old
// session; ask the gateway again.
window.addEventListener('pageshow', (event) => {
  if (event.persisted) loadUser();
});

loadUser(justSignedOut);
