// The audit log (owners and admins): newest first, a page at a time ("Load more"). Who
// acted and on whom are shown by name where they are members; ids otherwise (a former
// member stays a pseudonymous id, as domain/rights.py keeps it).
import { api } from "../lib/api.js";
import { el, formatTime, status } from "../lib/dom.js";
import { has, t } from "../lib/i18n.js";
import { busy, byId, cell, isManager, money, show } from "./team_billing_common.js";

const PAGE = 50;
const MONEY_DETAILS = new Set([
  "amount_usd",
  "balance_usd",
  "low_balance_usd",
  "threshold_usd",
  "monthly_cap_usd",
  "daily_usd",
  "monthly_usd",
]);
const ROLE_DETAILS = new Set(["role", "from_role", "to_role"]);

function actionName(action) {
  const key = `audit.action_${action}`;
  return has(key) ? t(key) : action;
}

function detailValue(name, value) {
  if (value === null || value === undefined) return t("audit.value_none");
  if (typeof value === "boolean") return t(value ? "audit.value_yes" : "audit.value_no");
  if (Array.isArray(value)) return value.join(", ");
  if (ROLE_DETAILS.has(name) && has(`console.role_${value}`)) return t(`console.role_${value}`);
  if (MONEY_DETAILS.has(name)) return money(value);
  if (name === "method" && has(`audit.method_${value}`)) return t(`audit.method_${value}`);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function detailList(details) {
  const entries = Object.entries(details || {});
  if (!entries.length) return null;
  return el(
    "ul",
    { class: "tb-details" },
    entries.map(([name, value]) => {
      const key = `audit.detail_${name}`;
      return el("li", {}, `${has(key) ? t(key) : name}${t("audit.detail_separator")}${detailValue(name, value)}`);
    }),
  );
}

export async function render(ctx) {
  const { orgId, role, org } = ctx;
  if (!orgId || !isManager(role)) {
    show(byId("audit-denied"));
    return;
  }
  show(byId("audit-main"));
  const base = `/api/orgs/${encodeURIComponent(orgId)}`;
  let names = new Map();
  try {
    const { members } = await api("GET", `${base}/members`);
    names = new Map(members.map((m) => [m.user_id, { name: m.name || m.email, email: m.name ? m.email : "" }]));
  } catch {
    names = new Map(); // ids are shown instead
  }
  names.set(orgId, { name: org.name, email: "" });

  // A member by name (and address), the operator in words, anything else by its id.
  function person(id) {
    if (id === "operator") return t("audit.operator");
    const found = names.get(id);
    if (!found) return el("span", { class: "tb-id" }, id);
    return [el("span", {}, found.name), found.email ? el("span", { class: "tb-sub" }, found.email) : null];
  }

  function row(entry) {
    return el(
      "tr",
      { "data-action": entry.action },
      cell(t("audit.col_time"), el("time", { datetime: entry.at }, formatTime(entry.at))),
      cell(t("audit.col_actor"), person(entry.actor)),
      cell(t("audit.col_action"), el("span", { class: "tb-strong" }, actionName(entry.action)), detailList(entry.details)),
      cell(t("audit.col_target"), person(entry.target)),
      cell(t("audit.col_ip"), entry.ip || t("audit.value_none")),
    );
  }

  let next = null;
  async function load(more = false) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (more && next) query.set("before", next);
    const page = await api("GET", `${base}/audit?${query}`);
    const body = byId("audit-body");
    const first = body.children.length;
    const rows = page.entries.map(row);
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    next = page.next;
    show(byId("audit-table"), body.children.length > 0);
    show(byId("audit-empty"), body.children.length === 0);
    show(byId("audit-more"), Boolean(next));
    return more ? body.children[first] : null;
  }

  byId("audit-more").addEventListener("click", (event) =>
    busy(event.currentTarget, async () => {
      try {
        const firstNew = await load(true);
        if (firstNew) {
          firstNew.setAttribute("tabindex", "-1");
          firstNew.focus();
        }
      } catch (error) {
        status(error.message, "error");
      }
    }),
  );
  await load();
}
