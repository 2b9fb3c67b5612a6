// /sign-in: asks for a sign-in link by email (POST /api/auth/email-link). A new address
// needs the terms accepted (the API refuses otherwise, and the message says so).
import { api } from "../lib/api.js";
import { status } from "../lib/dom.js";
import { t } from "../lib/i18n.js";

// /sign-in?next=<a /console/ path>: where the console goes once signed in (console/main.js),
// kept for this tab in sessionStorage; anything but a path of this origin under /console/
// is ignored. It leaves the address bar at once (an invitation's token is in it).
const NEXT_KEY = "dynoyard_next";

export function keepNext() {
  const url = new URL(window.location.href);
  const next = url.searchParams.get("next");
  if (next === null) return;
  let target = null;
  try {
    target = new URL(next, window.location.origin);
  } catch {
    target = null;
  }
  if (target && target.origin === window.location.origin && target.pathname.startsWith("/console/")) {
    sessionStorage.setItem(NEXT_KEY, target.pathname + target.search);
  }
  url.searchParams.delete("next");
  window.history.replaceState(null, "", url.pathname + url.search + url.hash);
}

if (document.getElementById("email-link-form")) keepNext();

export function wireSignIn(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = form.elements.email.value.trim();
    if (!email || !form.elements.email.checkValidity()) {
      status(t("sign_in.email_invalid"), "error");
      form.elements.email.focus();
      return;
    }
    const body = { email, accept_terms: form.elements.accept_terms.checked };
    const name = form.elements.name.value.trim();
    if (name) body.name = name;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await api("POST", "/api/auth/email-link", body);
      status(t("sign_in.link_sent", { email }), "ok");
    } catch (error) {
      status(error.message, "error");
    } finally {
      button.disabled = false;
    }
  });
}
