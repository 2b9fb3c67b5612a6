// Analytics consent on the public pages. The server renders the banner (hidden, with the
// PostHog key and host as data attributes) only when analytics is configured, and only on
// the public site: without it this module does nothing. PostHog (./analytics.js, a chunk of
// its own) is imported only after the visitor accepts; before that, and after a decline,
// no analytics script, cookie, storage or request exists. The choice itself is kept in
// localStorage (functional: it remembers the answer, nothing else) and can be changed from
// the footer's settings button; withdrawing opts PostHog out, removes its cookies and
// storage, and reloads the page so that none of it keeps running.
import { t } from "../lib/i18n.js";

const ACCEPTED = "accepted";
const DECLINED = "declined";
// What PostHog writes (ph_<key>_posthog, __ph_opt_in_out_<key>, ph_<key>_window_id...).
const POSTHOG_NAME = /^(ph_|__ph|_ph)/;

export function startConsent() {
  const banner = document.getElementById("consent-banner");
  if (!banner || !banner.dataset.posthogKey) return;
  const storageKey = banner.dataset.consentKey;
  const settings = document.getElementById("consent-settings");
  const current = document.getElementById("consent-current");
  const announce = document.getElementById("consent-status");
  let analytics = null; // the running PostHog, once loaded
  let returnFocus = null;

  const read = () => {
    try {
      const value = localStorage.getItem(storageKey);
      return value === ACCEPTED || value === DECLINED ? value : null;
    } catch {
      return null; // storage blocked: ask each time, load nothing
    }
  };
  const save = (value) => {
    try {
      localStorage.setItem(storageKey, value);
    } catch {
      // storage blocked: the choice holds for this page only
    }
  };

  async function load() {
    if (analytics) return;
    const module = await import("./analytics.js");
    analytics = module.startAnalytics({
      key: banner.dataset.posthogKey,
      host: banner.dataset.posthogHost,
      cookieDays: Number(banner.dataset.cookieDays),
    });
  }

  function show(fromSettings) {
    const choice = read();
    current.hidden = choice === null;
    if (choice) current.textContent = t(`site.consent_current_${choice}`);
    banner.hidden = false;
    document.body.classList.add("has-consent-banner");
    if (fromSettings) {
      returnFocus = settings;
      banner.focus();
    }
  }

  function hide() {
    // Focus goes back to the settings button, or (a first choice) to the page's content,
    // never lost with the button that is about to disappear.
    const hadFocus = banner.contains(document.activeElement);
    banner.hidden = true;
    document.body.classList.remove("has-consent-banner");
    const target = returnFocus || document.getElementById("main");
    if (hadFocus && target) target.focus({ preventScroll: true });
    returnFocus = null;
  }

  function accept() {
    save(ACCEPTED);
    hide();
    if (announce) announce.textContent = t("site.consent_saved_accepted");
    load().catch(() => {}); // analytics failing to load changes nothing for the visitor
  }

  function decline() {
    const wasAccepted = analytics !== null || read() === ACCEPTED;
    save(DECLINED);
    hide();
    if (announce) announce.textContent = t("site.consent_saved_declined");
    if (wasAccepted) {
      if (analytics) analytics.stop();
      clearPostHog();
      window.location.reload();
    }
  }

  banner.querySelector("[data-consent=accept]").addEventListener("click", accept);
  banner.querySelector("[data-consent=decline]").addEventListener("click", decline);
  banner.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && read() !== null) hide(); // only once a choice exists
  });
  if (settings) {
    settings.hidden = false;
    settings.addEventListener("click", () => show(true));
  }

  const choice = read();
  if (choice === ACCEPTED) load().catch(() => {});
  else if (choice === null) show(false);
}

// PostHog's cookies (on this host and each parent domain it may have used) and storage.
function clearPostHog() {
  for (const storage of [safeStorage("localStorage"), safeStorage("sessionStorage")]) {
    if (!storage) continue;
    for (const key of Object.keys(storage)) if (POSTHOG_NAME.test(key)) storage.removeItem(key);
  }
  const host = window.location.hostname;
  const parts = host.split(".");
  const domains = [""];
  for (let i = 0; i < parts.length - 1; i += 1) domains.push(`; domain=.${parts.slice(i).join(".")}`);
  for (const cookie of document.cookie.split(";")) {
    const name = cookie.split("=")[0].trim();
    if (!POSTHOG_NAME.test(name)) continue;
    for (const domain of domains) {
      document.cookie = `${name}=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/${domain}`;
    }
  }
}

function safeStorage(name) {
  try {
    return window[name];
  } catch {
    return null;
  }
}
