// /sign-in: asks for a sign-in link by email (POST /api/auth/email-link). A new address
// needs the terms accepted (the API refuses otherwise, and the message says so).
import { api } from "../lib/api.js";
import { status } from "../lib/dom.js";
import { t } from "../lib/i18n.js";
import { keepNext } from "../lib/next.js";

// /sign-in?next=<a /console/ path>: kept for after the sign-in (lib/next.js), then taken out
// of the address bar at once (an invitation's token is in it).
function keepNextFromUrl() {
  const url = new URL(window.location.href);
  const next = url.searchParams.get("next");
  if (next === null) return;
  keepNext(next);
  url.searchParams.delete("next");
  window.history.replaceState(null, "", url.pathname + url.search + url.hash);
}

if (document.getElementById("email-link-form")) keepNextFromUrl();

// The OAuth links sign up too: they carry the terms box's answer (accept_terms).
function wireOAuth(box) {
  const links = document.querySelectorAll("a.oauth-start");
  const copy = () => {
    for (const link of links) {
      const url = new URL(link.href);
      url.searchParams.set("accept_terms", box.checked ? "true" : "false");
      link.href = url.pathname + url.search;
    }
  };
  box.addEventListener("change", copy);
  copy();
}

export function wireSignIn(form) {
  wireOAuth(form.elements.accept_terms);
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
