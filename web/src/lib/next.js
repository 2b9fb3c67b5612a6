// Where the console goes once signed in, when a console page was opened signed out (an
// invitation's link): /sign-in?next=<path> keeps it, the console takes it after /api/me.
// Kept in localStorage, not per tab, because the emailed sign-in link usually opens in a
// new tab; it expires after an hour and is used once. Only a /console/ path of this origin.
const KEY = "dynoyard_next";
const KEEP_MS = 60 * 60 * 1000;

function consolePath(value) {
  let url;
  try {
    url = new URL(value, window.location.origin);
  } catch {
    return null;
  }
  if (url.origin !== window.location.origin || !url.pathname.startsWith("/console/")) return null;
  return url.pathname + url.search;
}

export function keepNext(value) {
  const path = consolePath(value);
  if (path) localStorage.setItem(KEY, JSON.stringify({ path, until: Date.now() + KEEP_MS }));
}

export function takeNext() {
  const kept = localStorage.getItem(KEY);
  if (kept === null) return null;
  localStorage.removeItem(KEY);
  let entry;
  try {
    entry = JSON.parse(kept);
  } catch {
    return null;
  }
  if (!entry || typeof entry.path !== "string" || !(entry.until > Date.now())) return null;
  const path = consolePath(entry.path);
  const here = window.location.pathname + window.location.search;
  return path && path !== here ? path : null;
}
