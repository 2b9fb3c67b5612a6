// The signed-in console: who is signed in (GET /api/me, which also gives the CSRF token),
// the organization switcher (remembered in localStorage), sign out, then the page's own
// module renders into #app. No analytics is ever loaded here.
import { api, setCsrf } from "../lib/api.js";
import { status } from "../lib/dom.js";
import { t } from "../lib/i18n.js";
import { keepNext, takeNext } from "../lib/next.js";
import * as acceptInvitation from "./accept_invitation.js";
import * as account from "./account.js";
import * as audit from "./audit.js";
import * as billing from "./billing.js";
import * as keys from "./keys.js";
import * as settings from "./settings.js";
import * as team from "./team.js";
import * as usage from "./usage.js";

const PAGES = { usage, keys, team, billing, settings, audit, account, accept_invitation: acceptInvitation };
const ORG_KEY = "dynoyard_org";
function chooseOrg(orgs) {
  const wanted = new URLSearchParams(window.location.search).get("org") || localStorage.getItem(ORG_KEY);
  return orgs.find((o) => o.org_id === wanted) || orgs[0] || null;
}

function fillSwitcher(orgs, current) {
  const select = document.getElementById("org-switch");
  select.replaceChildren(
    ...orgs.map((o) => {
      const option = document.createElement("option");
      option.value = o.org_id;
      option.textContent = `${o.name} (${t("console.role_" + o.role)})`;
      option.selected = current && o.org_id === current.org_id;
      return option;
    }),
  );
  select.disabled = orgs.length < 2;
  select.addEventListener("change", () => {
    localStorage.setItem(ORG_KEY, select.value);
    const url = new URL(window.location.href);
    url.searchParams.delete("org");
    window.location.assign(url.pathname + url.search);
  });
}

async function signOut(path) {
  try {
    await api("POST", path);
  } finally {
    window.location.assign("/sign-in");
  }
}

async function start() {
  const root = document.getElementById("app");
  // A stale session sends the page to /sign-in (lib/api.js): come back here after.
  if (root.dataset.page === "accept_invitation") {
    keepNext(window.location.pathname + window.location.search);
  }
  const me = await api("GET", "/api/me");
  setCsrf(me.csrf_token);
  const next = takeNext();
  if (next) {
    window.location.assign(next);
    return;
  }
  document.getElementById("signed-in-as").textContent = me.user.email;
  const org = chooseOrg(me.orgs);
  if (org) localStorage.setItem(ORG_KEY, org.org_id);
  fillSwitcher(me.orgs, org);
  document.getElementById("sign-out").addEventListener("click", () => signOut("/api/auth/sign-out"));
  document
    .getElementById("sign-out-everywhere")
    .addEventListener("click", () => signOut("/api/auth/sign-out-everywhere"));
  const page = PAGES[root.dataset.page];
  await page.render({ me, org, orgId: org?.org_id, role: org?.role, root });
  root.setAttribute("aria-busy", "false");
}

start().catch((error) => status(error.message || t("common.error_generic"), "error"));
