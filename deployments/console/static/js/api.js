// Calls to the services' own APIs, with this browser's session cookie (same origin). A
// change carries X-KIKI-Console, which the services ask of cookie-authenticated changes.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(path, { method = "GET", body, query } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-KIKI-Console"] = "1";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      for (const one of Array.isArray(v) ? v : [v]) {
        if (one !== undefined && one !== null) params.append(k, String(one));
      }
    }
    url += `?${params}`;
  }
  const resp = await fetch(url, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = data && data.error;
    throw new ApiError(resp.status, err ? err.code : `http_${resp.status}`,
      err ? err.message : resp.statusText);
  }
  return data;
}

// The signed-in key's scopes (set by app.js): a tenant scope includes the weaker ones.
const RANK = { read: 1, write: 2, admin: 3 };
let held = [];
export function setScopes(scopes) { held = scopes; }
export function can(scope) {
  if (scope === "operator") return held.includes("operator");
  return held.some((s) => (RANK[s] || 0) >= RANK[scope]);
}
