// /console/invitations/accept?token=…: the emailed invitation's link. The token is posted
// with the session (POST /api/invitations/accept), then the team page of the organization
// joined opens. The token leaves the address bar at once; it stays in memory for a retry.
import { api } from "../lib/api.js";
import { status } from "../lib/dom.js";
import { t } from "../lib/i18n.js";
import { ORG_KEY, busy, byId, show } from "./team_billing_common.js";

const NEXT_KEY = "dynoyard_next"; // console/main.js: where to go after signing in

export async function render(ctx) {
  const here = window.location.pathname + window.location.search;
  const token = new URLSearchParams(window.location.search).get("token");
  window.history.replaceState(null, "", window.location.pathname);
  const message = byId("accept-message");
  const retry = byId("accept-retry");
  const switchAccount = byId("accept-switch");
  const toTeam = byId("accept-console");

  const heading = byId("accept-heading");

  // The card says what went wrong and what can be done; focus goes to it.
  function fail(text, { canRetry = false, canSwitch = false } = {}) {
    heading.textContent = t("team.accept_failed_heading");
    message.textContent = text;
    message.dataset.kind = "error";
    heading.setAttribute("tabindex", "-1");
    heading.focus();
    show(retry, canRetry);
    show(switchAccount, canSwitch);
    show(toTeam);
  }

  if (!token) {
    fail(t("team.accept_no_token"));
    return;
  }

  async function accept() {
    heading.textContent = t("team.accept_heading");
    message.textContent = t("team.accept_working");
    delete message.dataset.kind;
    show(retry, false);
    try {
      const joined = await api("POST", "/api/invitations/accept", { token });
      localStorage.setItem(ORG_KEY, joined.org_id);
      message.textContent = t("team.accept_done", { name: joined.name });
      status(t("team.accept_done", { name: joined.name }), "ok");
      window.location.assign(`/console/team?org=${encodeURIComponent(joined.org_id)}&joined=1`);
    } catch (error) {
      if (error.code === "already_member") {
        fail(error.message);
      } else if (error.code === "invitation_email_mismatch") {
        fail(t("team.accept_mismatch", { email: ctx.me.user.email }), { canSwitch: true });
      } else if (error.code === "email_not_verified") {
        fail(error.message, { canSwitch: true });
      } else {
        const transient = error.status === 0 || error.status >= 500 || error.status === 429;
        fail(error.message, { canRetry: transient || error.code === "csrf_failed" });
      }
    }
  }

  retry.addEventListener("click", () => busy(retry, accept));
  // Signed in as someone else: sign out, then sign in as the invited address and come back.
  switchAccount.addEventListener("click", () =>
    busy(switchAccount, async () => {
      try {
        await api("POST", "/api/auth/sign-out");
      } finally {
        sessionStorage.setItem(NEXT_KEY, here);
        window.location.assign("/sign-in");
      }
    }),
  );
  await accept();
}
