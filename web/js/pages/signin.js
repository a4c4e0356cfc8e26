// Shown when the API says UNAUTHENTICATED: the platform's sign-in is
// server-rendered at /auth/sign-in (email → magic link).
import { h, replace } from '../ui.js';
import { signInUrl } from '../nav.js';

export async function render(main) {
  document.title = 'Sign in · BuildMyMCP';
  replace(main,
    h('section', { class: 'card', style: 'max-width:32rem;margin:2rem auto' },
      h('h1', { tabindex: '-1' }, 'Sign in to BuildMyMCP'),
      h('p', {}, 'Describe the tools you want, and BuildMyMCP builds, deploys and hosts an MCP server that Claude, ChatGPT, Cursor or VS Code can connect to.'),
      h('p', {}, 'Sign in with your email address: we send you a link that signs you in, no password needed.'),
      h('p', { class: 'actions' }, h('a', { class: 'button', href: signInUrl() }, 'Sign in with email'))));
}
