// The billing page (owners and admins): the balance, a top-up through Stripe Checkout, the
// ledger's history with each card's brand and last four, the low-balance alert and
// auto-recharge. Amounts stay the API's decimal strings; typed ones are checked as text.
// The return from Stripe grants nothing by itself: credits come from Stripe's confirmed
// payment (the webhook), so the page looks again for a little while after it.
import { api } from "../lib/api.js";
import { el, formatTime, status } from "../lib/dom.js";
import { has, t } from "../lib/i18n.js";
import {
  busy,
  byId,
  cell,
  cents,
  fieldError,
  isManager,
  money,
  parseUsdInput,
  show,
  tidyUsd,
} from "./team_billing_common.js";

const MIN_TOPUP_CENTS = 500; // domain/billing.py: 5 to 10,000 USD
const MAX_TOPUP_CENTS = 1_000_000;
const MAX_LOW_BALANCE = 1_000_000;
const MAX_CAP_CENTS = 10_000_000; // domain/alerts.py: the monthly cap, at most 100,000 USD
const MAX_THRESHOLD_CENTS = 100_000_000;
const PAGE = 25;
const RECHECKS_MS = [1500, 3000, 5000, 8000, 12000];

function kindName(kind) {
  const key = `billing.kind_${kind}`;
  return has(key) ? t(key) : kind;
}

function cardText(entry) {
  if (!entry.card_brand && !entry.card_last4) return "";
  const key = `billing.brand_${entry.card_brand}`;
  const brand = entry.card_brand ? (has(key) ? t(key) : entry.card_brand) : t("billing.brand_card");
  return entry.card_last4 ? t("billing.card_ending", { brand, last4: entry.card_last4 }) : brand;
}

function details(entry) {
  if (entry.kind === "usage_daily" && entry.date) return t("billing.usage_of_day", { date: entry.date });
  return entry.reason || "";
}

export async function render(ctx) {
  const { orgId, role } = ctx;
  if (!orgId || !isManager(role)) {
    show(byId("billing-denied"));
    return;
  }
  show(byId("billing-main"));
  const base = `/api/orgs/${encodeURIComponent(orgId)}`;
  let next = null;
  let newest = null;

  async function loadTransactions(more = false) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (more && next) query.set("before", next);
    const page = await api("GET", `${base}/billing/transactions?${query}`);
    byId("balance").textContent = money(page.balance_usd);
    const rows = page.transactions.map((entry) => transactionRow(entry));
    const body = byId("transactions-body");
    if (more) body.append(...rows);
    else {
      body.replaceChildren(...rows);
      newest = page.transactions[0]?.movement_id ?? null;
    }
    next = page.next;
    const any = body.children.length > 0;
    show(byId("transactions-table"), any);
    show(byId("transactions-empty"), !any);
    show(byId("transactions-more"), Boolean(next));
    return page;
  }

  function transactionRow(entry) {
    const negative = String(entry.amount_usd).startsWith("-");
    return el(
      "tr",
      { "data-movement": entry.movement_id },
      cell(t("billing.col_date"), formatTime(entry.at)),
      cell(t("billing.col_kind"), kindName(entry.kind)),
      el(
        "td",
        { class: `num ${negative ? "tb-negative" : "tb-positive"}`, "data-label": t("billing.col_amount") },
        negative ? money(entry.amount_usd) : `+${money(entry.amount_usd)}`,
      ),
      cell(t("billing.col_card"), cardText(entry)),
      cell(t("billing.col_details"), details(entry)),
    );
  }

  // Back from Stripe's page: say so, and look again until the confirmed payment shows.
  async function afterCheckout() {
    const params = new URLSearchParams(window.location.search);
    const outcome = params.get("checkout");
    if (!outcome) return;
    params.delete("checkout");
    const query = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (query ? `?${query}` : ""));
    if (outcome === "cancelled") {
      status(t("billing.checkout_cancelled"), "info");
      return;
    }
    if (outcome !== "success") return;
    status(t("billing.checkout_success"), "ok");
    const before = newest;
    for (const wait of RECHECKS_MS) {
      await new Promise((resolve) => setTimeout(resolve, wait));
      const page = await loadTransactions();
      if (page.transactions[0]?.movement_id !== before) break;
    }
  }

  function wireTopup() {
    const form = byId("topup-form");
    const amount = byId("topup-amount");
    for (const preset of form.querySelectorAll("button[data-amount]")) {
      preset.addEventListener("click", () => {
        amount.value = preset.dataset.amount;
        fieldError(amount, null);
        amount.focus();
      });
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = parseUsdInput(amount.value);
      if (value === null) {
        fieldError(amount, t("billing.amount_format"));
        amount.focus();
        return;
      }
      if (cents(value) < MIN_TOPUP_CENTS || cents(value) > MAX_TOPUP_CENTS) {
        fieldError(amount, t("billing.amount_range"));
        amount.focus();
        return;
      }
      fieldError(amount, null);
      await busy(byId("topup-submit"), async () => {
        try {
          const { url } = await api("POST", `${base}/billing/checkout`, {
            amount_usd: value,
            save_card: byId("topup-save-card").checked,
          });
          status(t("billing.checkout_redirecting"), "info");
          window.location.assign(url);
        } catch (error) {
          if (error.code === "invalid_request") fieldError(amount, t("billing.amount_range"));
          status(error.message, "error");
        }
      });
    });
  }

  async function loadLowBalance() {
    const settings = await api("GET", `${base}/settings`);
    const current = settings.low_balance_usd;
    byId("low-current").textContent =
      current === null ? t("billing.low_off") : t("billing.low_on", { amount: money(current) });
    byId("low-amount").value = current === null ? "" : tidyUsd(current);
    show(byId("low-remove"), current !== null);
  }

  function wireLowBalance() {
    const form = byId("low-form");
    const input = byId("low-amount");
    async function save(value, button) {
      await busy(button, async () => {
        try {
          await api("PATCH", `${base}/settings`, { low_balance_usd: value });
          await loadLowBalance();
          status(value === null ? t("billing.low_removed") : t("billing.low_saved"), "ok");
        } catch (error) {
          if (error.code === "invalid_request") fieldError(input, t("billing.low_invalid"));
          status(error.message, "error");
        }
      });
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = parseUsdInput(input.value, 6);
      if (value === null || Number(value.split(".")[0]) > MAX_LOW_BALANCE) {
        fieldError(input, t("billing.low_invalid"));
        input.focus();
        return;
      }
      fieldError(input, null);
      await save(value, byId("low-save"));
    });
    byId("low-remove").addEventListener("click", async () => {
      fieldError(input, null);
      await save(null, byId("low-remove"));
      byId("low-amount").focus();
    });
  }

  let names = new Map();
  async function loadNames() {
    try {
      const { members } = await api("GET", `${base}/members`);
      names = new Map(members.map((m) => [m.user_id, m.name || m.email]));
    } catch {
      names = new Map();
    }
  }

  const recharge = {
    enabled: byId("recharge-enabled"),
    threshold: byId("recharge-threshold"),
    amount: byId("recharge-amount"),
    cap: byId("recharge-cap"),
  };

  function showRecharge(settings) {
    const on = settings.enabled;
    let state = on ? t("billing.recharge_on") : t("billing.recharge_off");
    if (on && settings.consent_at) {
      state +=
        " " +
        t("billing.recharge_consent", {
          who: names.get(settings.consent_by) || settings.consent_by || "",
          when: formatTime(settings.consent_at),
        });
    }
    byId("recharge-state").textContent = state;
    recharge.enabled.checked = on;
    recharge.threshold.value = tidyUsd(settings.threshold_usd ?? "5.00");
    recharge.amount.value = tidyUsd(settings.amount_usd ?? "25.00");
    recharge.cap.value = tidyUsd(settings.monthly_cap_usd ?? "100.00");
    // Only an owner turns it on (with a saved card); an admin may turn it off.
    const mayTurnOn = role === "owner" && settings.card_saved;
    recharge.enabled.disabled = !on && !mayTurnOn;
    show(byId("recharge-no-card"), !settings.card_saved && !on);
    show(byId("recharge-owner-only"), role !== "owner");
  }

  function checkRecharge() {
    let firstBad = null;
    const values = {};
    const rules = [
      ["threshold", 0, MAX_THRESHOLD_CENTS, "billing.recharge_threshold_invalid"],
      ["amount", MIN_TOPUP_CENTS, MAX_TOPUP_CENTS, "billing.recharge_amount_invalid"],
      ["cap", 0, MAX_CAP_CENTS, "billing.recharge_cap_invalid"],
    ];
    for (const [name, low, high, message] of rules) {
      const value = parseUsdInput(recharge[name].value);
      const ok = value !== null && cents(value) >= low && cents(value) <= high;
      fieldError(recharge[name], ok ? null : t(message));
      if (ok) values[name] = value;
      else firstBad = firstBad || recharge[name];
    }
    if (!firstBad && cents(values.cap) < cents(values.amount)) {
      fieldError(recharge.cap, t("billing.recharge_cap_below_amount"));
      firstBad = recharge.cap;
    }
    return firstBad ? { firstBad } : { values };
  }

  function wireRecharge() {
    byId("recharge-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const { firstBad, values } = checkRecharge();
      if (firstBad) {
        firstBad.focus();
        return;
      }
      await busy(byId("recharge-save"), async () => {
        try {
          const saved = await api("PUT", `${base}/billing/auto-recharge`, {
            enabled: recharge.enabled.checked,
            threshold_usd: values.threshold,
            amount_usd: values.amount,
            monthly_cap_usd: values.cap,
          });
          showRecharge(saved);
          status(t("billing.recharge_saved"), "ok");
        } catch (error) {
          status(error.message, "error");
        }
      });
    });
  }

  wireTopup();
  wireLowBalance();
  wireRecharge();
  byId("transactions-more").addEventListener("click", (event) =>
    busy(event.currentTarget, async () => {
      try {
        const count = byId("transactions-body").children.length;
        await loadTransactions(true);
        byId("transactions-body").children[count]?.setAttribute("tabindex", "-1");
        byId("transactions-body").children[count]?.focus();
      } catch (error) {
        status(error.message, "error");
      }
    }),
  );
  await Promise.all([loadTransactions(), loadLowBalance(), loadNames()]);
  showRecharge(await api("GET", `${base}/billing/auto-recharge`));
  afterCheckout().catch((error) => status(error.message, "error"));
}
