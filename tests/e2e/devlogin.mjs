// devlogin.mjs — script oidc-provider's devInteractions (login + consent) with plain fetch.
//
// scriptedLogin(authorizationUrl, { redirectUri, username, password, jar })
//   Follows the authorization URL, keeps the provider's cookies, fills and posts every HTML
//   form it is shown (login: login/password; consent: as is) and stops at the redirect to
//   `redirectUri`, which is never contacted. Returns { code, state, iss, redirect }.
//   Returns also `pages`, the prompts it answered (e.g. ["login"] or ["login","consent"]).
//   Throws if the authorization server answers with an error redirect or anything unexpected.
//
// Only the form markup oidc-provider's dev views produce has to be understood: one <form>
// with an action, hidden inputs, and text/password inputs.

const decode = (s) => s
  .replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&#x27;/g, "'")
  .replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#x2F;/g, '/').replace(/&amp;/g, '&');

function attr(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i'));
  return m ? decode(m[1] ?? m[2] ?? m[3]) : undefined;
}

export function parseForm(html) {
  const form = html.match(/<form\b[^>]*>([\s\S]*?)<\/form>/i);
  if (!form) return undefined;
  const open = form[0].match(/<form\b[^>]*>/i)[0];
  const fields = [];
  for (const m of form[1].matchAll(/<input\b[^>]*>/gi)) {
    const name = attr(m[0], 'name');
    if (name) fields.push({ name, type: (attr(m[0], 'type') ?? 'text').toLowerCase(), value: attr(m[0], 'value') ?? '' });
  }
  return { action: attr(open, 'action'), method: (attr(open, 'method') ?? 'get').toLowerCase(), fields };
}

class CookieJar {
  #cookies = new Map(); // name -> { value, path }

  store(res) {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = '/';
      let expired = value === '';
      for (const a of attrs) {
        const [k, v = ''] = a.trim().split('=');
        if (k.toLowerCase() === 'path') path = v;
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      const key = `${name}\u0000${path}`;
      if (expired) this.#cookies.delete(key);
      else this.#cookies.set(key, { name, value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    return [...this.#cookies.values()]
      .filter((c) => pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`) || c.path === '/')
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }
}

function isRedirectTo(location, redirectUri) {
  const a = new URL(location);
  const b = new URL(redirectUri);
  return a.origin === b.origin && a.pathname === b.pathname;
}

export async function scriptedLogin(authorizationUrl, {
  redirectUri, username = 'alice', password = 'any-password', jar = new CookieJar(),
} = {}) {
  if (!redirectUri) throw new Error('scriptedLogin: redirectUri is required');
  let url = String(authorizationUrl);
  let init = { method: 'GET' };
  const pages = [];
  for (let hop = 0; hop < 20; hop += 1) {
    const headers = { ...(init.headers ?? {}) };
    const cookie = jar.header(url);
    if (cookie) headers.cookie = cookie;
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    jar.store(res);
    if (res.status >= 300 && res.status < 400) {
      await res.body?.cancel();
      const location = new URL(res.headers.get('location'), url).href;
      if (isRedirectTo(location, redirectUri)) {
        const q = new URL(location).searchParams;
        if (q.get('error')) {
          throw new Error(`authorization failed: ${q.get('error')} ${q.get('error_description') ?? ''}`);
        }
        return { code: q.get('code'), state: q.get('state'), iss: q.get('iss'), redirect: location, pages };
      }
      url = location;
      init = { method: 'GET' };
      continue;
    }
    const body = await res.text();
    if (res.status !== 200) throw new Error(`authorization flow: HTTP ${res.status} at ${url}: ${body.slice(0, 300)}`);
    const form = parseForm(body);
    if (!form) throw new Error(`authorization flow: no form at ${url}: ${body.slice(0, 300)}`);
    const params = new URLSearchParams();
    for (const f of form.fields) {
      if (f.name === 'login') params.set(f.name, username);
      else if (f.type === 'password') params.set(f.name, password);
      else params.set(f.name, f.value);
    }
    pages.push(params.get('prompt') ?? 'form');
    url = new URL(form.action ?? url, url).href;
    init = form.method === 'post'
      ? { method: 'POST', body: params.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } }
      : { method: 'GET' };
    if (form.method !== 'post') url = `${url.split('?')[0]}?${params}`;
  }
  throw new Error('authorization flow: too many hops');
}

export { CookieJar };
