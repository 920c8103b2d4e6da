// The access token: taken from the URL fragment (`#token=...`, printed by `make run`) or pasted,
// kept in sessionStorage only (gone when the tab closes), never logged and never put in the page URL.

const STORAGE_KEY = "realtime-admin.token";

const ROLE_CLAIMS = ["role", "roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"];
const NAME_CLAIMS = ["name", "unique_name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"];
const ID_CLAIMS = ["sub", "nameid", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"];

export interface TokenInfo {
  /** Expiry, ms since the epoch (null if the token has no exp claim). */
  expiresAt: number | null;
  name: string | null;
  userId: string | null;
  roles: string[];
}

/** Reads `#token=...` from the address, removes it from the address bar (history.replaceState)
 *  and returns it. Other fragment parameters are kept. */
export function takeTokenFromFragment(): string | null {
  const hash = window.location.hash;
  if (hash.length < 2) return null;
  const params = new URLSearchParams(hash.slice(1));
  const token = params.get("token");
  if (token === null) return null;
  params.delete("token");
  const rest = params.toString();
  const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : "");
  window.history.replaceState(window.history.state, "", url);
  return token.trim() || null;
}

export function loadToken(): string | null {
  try {
    return window.sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

export function saveToken(token: string): void {
  try {
    window.sessionStorage.setItem(STORAGE_KEY, token);
  } catch {
    // Storage disabled: the token lives in memory for this page only.
  }
}

export function clearToken(): void {
  try {
    window.sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // nothing stored
  }
}

function base64UrlDecode(segment: string): string {
  const base64 = segment.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(segment.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

function strings(claims: Record<string, unknown>, names: string[]): string[] {
  const out: string[] = [];
  for (const name of names) {
    const value = claims[name];
    if (typeof value === "string") out.push(value);
    else if (Array.isArray(value)) out.push(...value.filter((v): v is string => typeof v === "string"));
  }
  return out;
}

/** The token's claims, decoded without verification (the server verifies; this is for messages only).
 *  Returns null when the text is not a JWT. */
export function decodeToken(token: string): TokenInfo | null {
  const parts = token.split(".");
  if (parts.length !== 3 || parts.some((p) => p.length === 0 && p !== parts[2])) return null;
  try {
    const claims: unknown = JSON.parse(base64UrlDecode(parts[1] ?? ""));
    if (claims === null || typeof claims !== "object" || Array.isArray(claims)) return null;
    const record = claims as Record<string, unknown>;
    const exp = record["exp"];
    return {
      expiresAt: typeof exp === "number" ? exp * 1000 : null,
      name: strings(record, NAME_CLAIMS)[0] ?? null,
      userId: strings(record, ID_CLAIMS)[0] ?? null,
      roles: strings(record, ROLE_CLAIMS),
    };
  } catch {
    return null;
  }
}

/** Why a token cannot be used, before asking the server; null when it looks usable. */
export function tokenProblem(token: string, now: number = Date.now()): string | null {
  const info = decodeToken(token);
  if (info === null) return "That is not an access token (expected a JWT: three base64url parts separated by dots).";
  if (info.expiresAt !== null && info.expiresAt <= now) {
    return `This token expired at ${new Date(info.expiresAt).toLocaleString()}. Sign in with a new one (make run prints one).`;
  }
  return null;
}
