// The account page: the person's own data as one JSON document (GET /api/me/export, saved
// through a Blob link), and the account's deletion behind a dialog where they type their
// address (DELETE /api/me {"confirm_email"}). Signing out everywhere is in the header.
import { api } from "../lib/api.js";
import { status } from "../lib/dom.js";
import { has, t } from "../lib/i18n.js";
import { ORG_KEY, busy, byId, confirmDialog, show } from "./team_billing_common.js";

function fileName(response) {
  const found = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "");
  return found ? found[1] : `dynoyard-export-${new Date().toISOString().slice(0, 10)}.json`;
}

async function exportFailure(response) {
  if (response.status === 401) {
    window.location.assign("/sign-in");
    return t("common.error_signed_out");
  }
  let code = `http_${response.status}`;
  try {
    code = (await response.json())?.error?.code || code;
  } catch {
    // not JSON: the status's words
  }
  return has(`errors.${code}`) ? t(`errors.${code}`) : t("common.error_generic");
}

export async function render(ctx) {
  const { me } = ctx;
  byId("account-email").textContent = me.user.email;
  byId("account-name").textContent = me.user.name || t("account.no_name");
  byId("account-orgs").textContent = me.orgs.length
    ? me.orgs.map((o) => `${o.name} (${t(`console.role_${o.role}`)})`).join(", ")
    : t("account.no_orgs");

  let exported = null;
  const link = byId("export-link");
  byId("export-button").addEventListener("click", (event) =>
    busy(event.currentTarget, async () => {
      status(t("account.export_working"), "info");
      let response;
      try {
        response = await fetch("/api/me/export", {
          headers: { accept: "application/json" },
          credentials: "same-origin",
          cache: "no-store",
        });
      } catch {
        status(t("common.error_network"), "error");
        return;
      }
      if (!response.ok) {
        status(await exportFailure(response), "error");
        return;
      }
      const blob = new Blob([await response.text()], { type: "application/json" });
      if (exported) URL.revokeObjectURL(exported);
      exported = URL.createObjectURL(blob);
      const name = fileName(response);
      link.href = exported;
      link.download = name;
      show(link);
      link.click();
      status(t("account.export_done", { file: name }), "ok");
    }),
  );

  byId("delete-button").addEventListener("click", async () => {
    const deleted = await confirmDialog({
      title: t("account.delete_dialog_title"),
      text: [t("account.delete_dialog_text"), t("account.delete_dialog_type", { email: me.user.email })],
      confirmLabel: t("account.delete_confirm"),
      field: { label: t("account.delete_dialog_label"), type: "email", autocomplete: "off" },
      action: async (typed) => {
        const given = (typed || "").trim();
        if (given.toLowerCase() !== me.user.email.trim().toLowerCase()) {
          throw new Error(t("errors.confirmation_mismatch"));
        }
        return api("DELETE", "/api/me", { confirm_email: given });
      },
    });
    if (!deleted) return;
    localStorage.removeItem(ORG_KEY);
    // Signed out now: what the console offers no longer applies; the page says what happened.
    for (const node of document.querySelectorAll(".console-header .org-switch, .console-nav, .account-menu")) {
      node.hidden = true;
    }
    for (const node of ctx.root.querySelectorAll(":scope > section:not(#deleted-panel)")) node.hidden = true;
    status(t("account.deleted_status"), "ok");
    const panel = byId("deleted-panel");
    show(panel);
    panel.focus();
  });
}
