// Hash navigation helpers shared by the pages (the router listens to hashchange).

/** The platform's server-rendered sign-in page, coming back here afterwards (`next`). */
export function signInUrl() {
  return `/auth/sign-in?next=${encodeURIComponent(`/${location.hash || '#/servers'}`)}`;
}

export function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, qs = ''] = raw.split('?');
  return { path, query: new URLSearchParams(qs) };
}

/** Goes to a route; `replace` keeps the current entry out of the history. */
export function navigate(path, { replace = false } = {}) {
  const target = `#${path}`;
  if (location.hash === target) { window.dispatchEvent(new HashChangeEvent('hashchange')); return; }
  if (replace) location.replace(target);
  else location.hash = target;
}
