// Hash navigation helpers shared by the pages (the router listens to hashchange).

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
