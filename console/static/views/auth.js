// The sign-in dialog: asks for a bearer token when the API answers 401,
// keeps it in session storage (gone when the tab closes), and shows the
// caller's scope in the top bar.

import { setToken } from '../api.js';
import { h } from './dom.js';

/** askToken opens the dialog with message and resolves once a token was entered. */
export function askToken(message) {
  const dlg = document.getElementById('login');
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const msg = h('p', { id: 'login-msg', class: message ? 'error' : 'muted', role: message ? 'alert' : null },
    message || 'This API needs a bearer token (--auth token or oidc).');
  return new Promise((resolve) => {
    const form = h('form', {
      method: 'dialog',
      onsubmit: (e) => {
        e.preventDefault();
        const t = input.value.trim();
        if (!t) return;
        setToken(t);
        dlg.close();
        resolve();
      },
    },
    h('h2', { id: 'login-title' }, 'Sign in'),
    msg,
    h('label', { for: 'token' }, 'Bearer token'),
    input,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'token-submit' }, 'Sign in')));
    dlg.replaceChildren(form);
    dlg.addEventListener('cancel', (e) => e.preventDefault()); // nothing to show without a token
    if (!dlg.open) dlg.showModal();
    input.focus();
  });
}

/** renderWho shows the caller's name and scope, and a sign-out button when a token is used. */
export function renderWho(root, scope, hasToken, onSignOut) {
  const what = scope.platform ? 'platform' : `project${scope.projects.length > 1 ? 's' : ''} ${scope.projects.join(', ')}`;
  root.replaceChildren(
    h('span', { class: 'scope', id: 'scope', title: 'what this caller may see' }, h('span', { class: 'muted' }, `${scope.name} · `), what),
    ...(hasToken ? [h('button', { type: 'button', class: 'ghost', id: 'signout', onclick: onSignOut }, 'Sign out')] : []));
}
