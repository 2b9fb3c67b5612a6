// The settings page: the organization's response cache (on/off and how long answers are
// kept; owners and admins change it, members see it), the organization's facts, and the
// signed-in person's own preferences (PATCH /api/me: name, email language, optional email).
import { api } from "../lib/api.js";
import { status } from "../lib/dom.js";
import { t } from "../lib/i18n.js";
import { busy, byId, fieldError, isManager, show } from "./team_billing_common.js";

const MIN_TTL = 60; // domain/accounts.py: 1 minute to 1 day
const MAX_TTL = 86_400;

// 1,800 → "30 minutes"; 5,400 → "1 hour 30 minutes"; 90 → "1 minute 30 seconds".
export function durationWords(seconds) {
  const parts = [];
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  if (hours) parts.push(t(hours === 1 ? "settings.hour" : "settings.hours", { n: hours }));
  if (minutes) parts.push(t(minutes === 1 ? "settings.minute" : "settings.minutes", { n: minutes }));
  if (rest) parts.push(t(rest === 1 ? "settings.second" : "settings.seconds", { n: rest }));
  return parts.join(t("settings.duration_joiner"));
}

function validTtl(text) {
  if (!/^\d{1,6}$/.test(text.trim())) return null;
  const seconds = Number(text.trim());
  return seconds >= MIN_TTL && seconds <= MAX_TTL ? seconds : null;
}

export async function render(ctx) {
  const { orgId, role, me } = ctx;
  wireMe(me);
  if (!orgId) return;
  const base = `/api/orgs/${encodeURIComponent(orgId)}`;
  const enabled = byId("cache-enabled");
  const ttl = byId("cache-ttl");
  const words = byId("cache-ttl-words");
  const manager = isManager(role);

  function showTtlWords() {
    const seconds = validTtl(ttl.value);
    words.textContent = seconds === null ? "" : t("settings.ttl_is", { words: durationWords(seconds) });
  }

  function fill(settings) {
    enabled.checked = settings.cache_enabled;
    ttl.value = String(settings.cache_ttl_seconds);
    showTtlWords();
    byId("org-name").textContent = settings.name;
    byId("org-id").textContent = settings.org_id;
    byId("org-rpm").textContent =
      !settings.rate_limit_rpm // null or 0: no organization-wide limit
        ? t("settings.org_rpm_default")
        : t("settings.org_rpm_value", { n: settings.rate_limit_rpm.toLocaleString(document.documentElement.lang) });
  }

  fill(await api("GET", `${base}/settings`));
  show(byId("cache-managers-only"), !manager);
  if (!manager) return;
  wireRename(base, role, fill);
  for (const control of [enabled, ttl, byId("cache-save")]) control.disabled = false;
  ttl.addEventListener("input", () => {
    showTtlWords();
    if (validTtl(ttl.value) !== null) fieldError(ttl, null);
  });
  byId("cache-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const seconds = validTtl(ttl.value);
    if (seconds === null) {
      fieldError(ttl, t("settings.ttl_invalid"));
      ttl.focus();
      return;
    }
    fieldError(ttl, null);
    await busy(byId("cache-save"), async () => {
      try {
        const saved = await api("PATCH", `${base}/settings`, {
          cache_enabled: enabled.checked,
          cache_ttl_seconds: seconds,
        });
        fill(saved);
        status(saved.cache_enabled ? t("settings.cache_saved_on") : t("settings.cache_saved_off"), "ok");
      } catch (error) {
        if (error.code === "invalid_request") fieldError(ttl, t("settings.ttl_invalid"));
        status(error.message, "error");
      }
    });
  });
}

// Owners and admins rename the organization (PATCH settings {name}); the switcher follows.
function wireRename(base, role, fill) {
  const form = byId("org-name-form");
  const input = byId("org-name-input");
  input.value = byId("org-name").textContent;
  show(form, true);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (!name || name.length > 100 || /[\u0000-\u001f\u007f-\u009f]/.test(name)) {
      fieldError(input, t("settings.org_name_invalid"));
      input.focus();
      return;
    }
    fieldError(input, null);
    await busy(byId("org-name-save"), async () => {
      try {
        const saved = await api("PATCH", `${base}/settings`, { name });
        fill(saved);
        input.value = saved.name;
        const option = document.querySelector("#org-switch option:checked");
        if (option) option.textContent = `${saved.name} (${t("console.role_" + role)})`;
        status(t("settings.org_renamed", { name: saved.name }), "ok");
      } catch (error) {
        if (error.param === "name") fieldError(input, t("settings.org_name_invalid"));
        status(error.message, "error");
      }
    });
  });
}

function wireMe(me) {
  const name = byId("me-name");
  const language = byId("me-language");
  const marketing = byId("me-marketing");
  function fill(user) {
    name.value = user.name || "";
    language.value = user.language === "zh-CN" ? "zh-CN" : "en";
    marketing.checked = Boolean(user.marketing_email);
  }
  fill(me.user);
  byId("me-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim(), language: language.value, marketing_email: marketing.checked };
    if (/[\u0000-\u001f\u007f-\u009f]/.test(body.name) || body.name.length > 100) {
      fieldError(name, t("settings.me_name_invalid"));
      name.focus();
      return;
    }
    fieldError(name, null);
    await busy(byId("me-save"), async () => {
      try {
        const { user } = await api("PATCH", "/api/me", body);
        fill(user);
        status(t("settings.me_saved"), "ok");
      } catch (error) {
        if (error.code === "invalid_request") fieldError(name, t("settings.me_name_invalid"));
        status(error.message, "error");
      }
    });
  });
}
