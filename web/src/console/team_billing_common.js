// What the team, billing, settings, audit and account pages share: a confirmation dialog
// that stays open to show why an action failed, money as decimal strings (never floats),
// and a visible section per role.
import { el } from "../lib/dom.js";
import { t } from "../lib/i18n.js";

export const ORG_KEY = "dynoyard_org"; // the org switcher's memory (console/main.js)
export const MANAGERS = new Set(["owner", "admin"]);

export function isManager(role) {
  return MANAGERS.has(role);
}

// Shows an element rendered hidden by the template.
export function show(node, visible = true) {
  if (node) node.hidden = !visible;
}

export function byId(id) {
  return document.getElementById(id);
}

let dialogs = 0;

// A modal confirmation. `action(value)` runs on Confirm; while it runs the dialog stays,
// and if it throws, its message shows inside the dialog (role=alert) and the dialog stays
// open. Resolves with the action's result, or null when cancelled. `field`: an input the
// person fills ({label, type, autocomplete}) or a choice ({label, options: [[value,
// text]], value}). Focus goes into the dialog and back to what opened it.
export function confirmDialog({ title, text, confirmLabel, danger = true, field = null, action }) {
  const id = `tb-dialog-${++dialogs}`;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    let result = null;
    let input = null;
    const body = [el("h2", { id: `${id}-title` }, title)];
    for (const [index, paragraph] of [text].flat().entries()) {
      body.push(el("p", { id: index === 0 ? `${id}-text` : null }, paragraph));
    }
    if (field) {
      if (field.options) {
        input = el(
          "select",
          { id: `${id}-field` },
          field.options.map(([value, label]) =>
            el("option", { value, selected: value === field.value }, label),
          ),
        );
      } else {
        input = el("input", {
          id: `${id}-field`,
          type: field.type || "text",
          autocomplete: field.autocomplete || "off",
          spellcheck: "false",
          required: true,
        });
      }
      body.push(el("label", { for: input.id, class: "tb-dialog-label" }, field.label), input);
    }
    const error = el("p", { class: "tb-dialog-error", role: "alert" });
    const cancel = el("button", { type: "button", class: "secondary" }, t("console.cancel"));
    const confirm = el("button", { type: "submit", class: danger ? "danger" : null }, confirmLabel);
    const form = el(
      "form",
      { class: "stack", novalidate: true },
      ...body,
      error,
      el("div", { class: "tb-dialog-actions" }, cancel, confirm),
    );
    const dialog = el(
      "dialog",
      { class: "tb-dialog", "aria-labelledby": `${id}-title`, "aria-describedby": `${id}-text` },
      form,
    );
    cancel.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
      resolve(result);
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      confirm.disabled = true;
      cancel.disabled = true;
      dialog.setAttribute("aria-busy", "true");
      try {
        result = (await action(input ? input.value : undefined)) ?? true;
        dialog.close();
      } catch (failure) {
        error.textContent = failure.message || t("common.error_generic");
        confirm.disabled = false;
        cancel.disabled = false;
        (input || cancel).focus();
      } finally {
        dialog.removeAttribute("aria-busy");
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    (input || cancel).focus();
  });
}

// -- money: the API's decimal strings, handled as text and whole cents -------------------

const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?$/;

// "25.000000" → "25.00", "-0.123400" → "-0.1234": at least 2 decimals, no trailing zeros
// past them. Anything else is shown as given.
export function tidyUsd(decimal) {
  if (decimal === null || decimal === undefined) return "";
  const found = DECIMAL.exec(String(decimal));
  if (!found) return String(decimal);
  const [, sign, whole, frac = ""] = found;
  let kept = frac.replace(/0+$/, "");
  if (kept.length < 2) kept = kept.padEnd(2, "0");
  const digits = whole.replace(/^0+(?=\d)/, "");
  const zero = /^0*$/.test(digits) && /^0*$/.test(kept);
  return `${zero ? "" : sign}${digits}.${kept}`;
}

// "$25.00", "-$0.1234", with thousands separators on the whole part.
export function money(decimal) {
  const tidy = tidyUsd(decimal);
  const found = DECIMAL.exec(tidy);
  if (!found) return tidy;
  const [, sign, whole, frac] = found;
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${sign}$${grouped}.${frac}`;
}

// A typed amount of USD ("25", "25.5", "$1,000.00"), at most `decimals` decimals (whole
// cents by default), as the plain decimal string the API takes ("25.50"), or null when it
// is not one.
export function parseUsdInput(text, decimals = 2) {
  const plain = String(text).trim().replace(/^\$/, "").replace(/,/g, "").trim();
  const found = new RegExp(`^(\\d{1,7})(?:\\.(\\d{1,${decimals}}))?$`).exec(plain);
  if (!found) return null;
  const whole = found[1].replace(/^0+(?=\d)/, "");
  return `${whole}.${(found[2] || "").padEnd(2, "0")}`;
}

// Whole cents of a plain decimal string with at most 2 decimals (exact: integers only).
export function cents(decimal) {
  const [whole, frac = ""] = decimal.split(".");
  return Number(whole) * 100 + Number(frac.padEnd(2, "0").slice(0, 2));
}

// A field's own error next to it (aria-describedby, aria-invalid); null clears it.
export function fieldError(input, message) {
  const id = `${input.id}-error`;
  let node = document.getElementById(id);
  if (!message) {
    if (node) node.remove();
    input.removeAttribute("aria-invalid");
    const described = (input.getAttribute("aria-describedby") || "").split(" ").filter((d) => d && d !== id);
    if (described.length) input.setAttribute("aria-describedby", described.join(" "));
    else input.removeAttribute("aria-describedby");
    return;
  }
  if (!node) {
    node = el("p", { id, class: "tb-field-error" });
    const field = input.closest(".tb-field");
    if (field) field.append(node);
    else input.after(node);
  }
  node.textContent = message;
  input.setAttribute("aria-invalid", "true");
  const described = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
  if (!described.includes(id)) input.setAttribute("aria-describedby", [...described, id].join(" "));
}

// A cell that labels itself in the narrow (stacked) table layout.
export function cell(label, ...children) {
  return el("td", { "data-label": label }, el("div", { class: "tb-cell" }, ...children));
}

// Runs `work` with the button disabled (and marked busy), whatever happens.
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}
