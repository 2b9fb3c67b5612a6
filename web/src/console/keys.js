// The console's keys page: the organization's keys (never a key itself: a hint), and for
// owners and admins (`manage_keys` in domain/administration.py) a create form with every
// scope, revoke and rotate behind a confirmation dialog. A new key (created or rotated) is
// shown once, in a panel with a Copy button; dismissing it removes it from the page, and
// nothing keeps it (no storage, no variable outlives the panel).
import { api } from "../lib/api.js";
import { el, formatTime, status } from "../lib/dom.js";
import { t } from "../lib/i18n.js";

const MANAGERS = new Set(["owner", "admin"]); // the roles with manage_keys
const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$/;
const WHOLE = /^\d{1,12}$/;
const DECIMAL = /^\d{1,12}(\.\d{1,12})?$/;
// The create form's fields: input id suffix → its error message when invalid.
const FIELDS = {
  name: "keys.error_name",
  models: "keys.error_models",
  expires: "keys.error_expires",
  rpm: "keys.error_whole",
  tpm: "keys.error_whole",
  daily_usd: "keys.error_usd",
  monthly_usd: "keys.error_usd",
  limits: "keys.error_limits",
};

const $ = (id) => document.getElementById(id);
const epochIso = (seconds) => new Date(seconds * 1000).toISOString();
const lang = () => document.documentElement.lang || "en";

// A day (UTC) in the page's language, in a <time> with the exact moment.
function day(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso || "");
  const text = new Intl.DateTimeFormat(lang(), { dateStyle: "medium", timeZone: "UTC" }).format(date);
  return el("time", { datetime: date.toISOString() }, text);
}

// The hour a key was last used (the API keeps only the hour): "Nov 25, 2026, 18:00–19:00 UTC".
function hour(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso || "");
  const clock = new Intl.DateTimeFormat(lang(), {
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
    timeZone: "UTC",
  });
  const end = new Date(date.getTime() + 3_600_000);
  const text = t("keys.last_used_hour", {
    day: new Intl.DateTimeFormat(lang(), { dateStyle: "medium", timeZone: "UTC" }).format(date),
    from: clock.format(date),
    to: clock.format(end),
  });
  return el("time", { datetime: date.toISOString() }, text);
}
const message = (error) => error?.message || t("common.error_generic");
const keyName = (key) => key.name || t("keys.unnamed");

// -- the list ---------------------------------------------------------------------------------

function stateOf(key, now) {
  if (key.revoked) return key.rotated_to ? "rotated" : "revoked";
  if (key.expires_at && key.expires_at * 1000 <= now) return "expired";
  if (key.rotated_to) return "rotating";
  return "active";
}

// A spend cap as written, with cents when it has fewer ("5" → "5.00"): text, not a float.
function dollars(amount) {
  const [whole, fraction = ""] = String(amount).split(".");
  return `${whole}.${fraction.padEnd(2, "0")}`;
}

function limitsOf(limits) {
  const lines = [];
  const count = (n) => new Intl.NumberFormat(lang()).format(n);
  if (limits?.rpm) lines.push(t("keys.limit_rpm", { n: count(limits.rpm) }));
  if (limits?.tpm) lines.push(t("keys.limit_tpm", { n: count(limits.tpm) }));
  if (limits?.daily_usd) lines.push(t("keys.limit_daily", { amount: dollars(limits.daily_usd) }));
  if (limits?.monthly_usd) lines.push(t("keys.limit_monthly", { amount: dollars(limits.monthly_usd) }));
  if (!lines.length) return el("span", { class: "muted" }, t("keys.no_limits"));
  return el(
    "ul",
    { class: "plain" },
    lines.map((line) => el("li", {}, line)),
  );
}

function modelsOf(models) {
  if (!models || !models.length) return el("span", { class: "muted" }, t("keys.all_models"));
  return el(
    "ul",
    { class: "plain" },
    models.map((m) => el("li", {}, el("code", {}, m))),
  );
}

function keysTable(keys, canManage, onAction) {
  const now = Date.now();
  const headers = [
    ["name", "keys.col_name"],
    ["key", "keys.col_key"],
    ["created", "keys.col_created"],
    ["last_used", "keys.col_last_used"],
    ["expires", "keys.col_expires"],
    ["models", "keys.col_models"],
    ["limits", "keys.col_limits"],
    ["status", "keys.col_status"],
    ...(canManage ? [["actions", "keys.col_actions"]] : []),
  ];
  const rows = [...keys].reverse().map((key) => {
    const state = stateOf(key, now);
    const live = state === "active";
    const revocable = live || state === "rotating"; // a rotated key's grace period ends early
    const cells = {
      name: el("span", { class: "key-name" }, keyName(key)),
      key: el("code", {}, key.hint),
      created: day(key.created_at),
      last_used: key.last_used_at
        ? hour(key.last_used_at)
        : el("span", { class: "muted" }, t("keys.never_used")),
      expires: key.expires_at
        ? day(epochIso(key.expires_at))
        : el("span", { class: "muted" }, t("keys.never_expires")),
      models: modelsOf(key.models),
      limits: limitsOf(key.limits),
      status: el("span", { class: `badge badge-${state}` }, t(`keys.status_${state}`)),
      actions: el(
        "div",
        { class: "row-actions" },
        live
          ? el(
              "button",
              {
                type: "button",
                class: "secondary",
                "aria-label": t("keys.rotate_named", { name: keyName(key) }),
                "data-action": "rotate",
                onclick: (e) => onAction("rotate", key, e.currentTarget),
              },
              t("keys.rotate"),
            )
          : null,
        revocable
          ? el(
              "button",
              {
                type: "button",
                class: "danger",
                "aria-label": t("keys.revoke_named", { name: keyName(key) }),
                "data-action": "revoke",
                onclick: (e) => onAction("revoke", key, e.currentTarget),
              },
              t("keys.revoke"),
            )
          : null,
      ),
    };
    return el(
      "tr",
      { "data-key-id": key.key_id, "data-state": state },
      headers.map(([name, label], i) =>
        i === 0
          ? el("th", { scope: "row", "data-label": t(label) }, cells[name])
          : el("td", { "data-label": t(label), class: `col-${name}` }, cells[name]),
      ),
    );
  });
  return el(
    "table",
    { class: "keys-table" },
    el("caption", {}, t("keys.list_caption")),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        headers.map(([name, label]) => el("th", { scope: "col", class: `col-${name}` }, t(label))),
      ),
    ),
    el("tbody", {}, rows),
  );
}

// -- the one-time panel -----------------------------------------------------------------------

// Shows a new key once. `note`: a line under the warning (a rotation's old key). Dismissing
// removes the panel, with the key, from the page; focus goes back to the list.
function showNewKey(apiKey, note) {
  const slot = $("new-key-slot");
  const input = el("input", {
    id: "new-key-value",
    type: "text",
    class: "key-value",
    readonly: true,
    spellcheck: "false",
    autocomplete: "off",
    "aria-describedby": "new-key-warning",
  });
  input.value = apiKey;
  const copied = el("p", { id: "new-key-copied", class: "status", role: "status", "aria-live": "polite" });
  const copy = el(
    "button",
    {
      type: "button",
      id: "new-key-copy",
      onclick: async () => {
        try {
          if (!navigator.clipboard?.writeText) throw new Error("no clipboard");
          await navigator.clipboard.writeText(input.value);
          copied.textContent = t("keys.copied");
          copied.dataset.kind = "ok";
        } catch {
          input.focus();
          input.select();
          copied.textContent = t("keys.copy_manually");
          copied.dataset.kind = "info";
        }
      },
    },
    t("keys.copy"),
  );
  const done = el(
    "button",
    {
      type: "button",
      id: "new-key-done",
      class: "secondary",
      onclick: () => {
        input.value = "";
        slot.replaceChildren();
        $("keys-list-title").focus();
      },
    },
    t("keys.new_key_done"),
  );
  const panel = el(
    "section",
    { id: "new-key-panel", class: "new-key", "aria-labelledby": "new-key-title", tabindex: "-1" },
    el("h2", { id: "new-key-title" }, t("keys.new_key_title")),
    el("p", { id: "new-key-warning", class: "warning" }, t("keys.new_key_warning")),
    note ? el("p", {}, note) : null,
    el("label", { for: "new-key-value" }, t("keys.new_key_label")),
    el("div", { class: "key-copy" }, input, copy),
    copied,
    el("div", { class: "actions" }, done),
  );
  slot.replaceChildren(panel);
  panel.scrollIntoView({ block: "start" });
  panel.focus({ preventScroll: true });
  input.addEventListener("focus", () => input.select());
}

// -- the create form --------------------------------------------------------------------------

function fieldError(name, text) {
  const node = $(`key-${name}-error`);
  node.textContent = text || "";
  node.hidden = !text;
  const input = name === "limits" ? null : $(`key-${name}`);
  if (input) {
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
}

function formError(text) {
  const node = $("key-form-error");
  node.textContent = text || "";
  node.hidden = !text;
}

function clearErrors() {
  formError("");
  for (const name of Object.keys(FIELDS)) fieldError(name, "");
}

// The body of POST /keys from the form, or the fields that are not well formed. Ranges are
// the API's to check (its answer names the field, shown the same way).
function readForm() {
  const value = (name) => $(`key-${name}`).value.trim();
  const wrong = [];
  const body = { name: value("name") };
  if (body.name.length > 100 || /[\x00-\x1f\x7f]/.test(body.name)) wrong.push("name");
  const models = value("models")
    .split(/[\s,，]+/)
    .filter(Boolean);
  if (models.some((m) => !MODEL_ID.test(m)) || models.length > 100) wrong.push("models");
  else if (models.length) body.models = [...new Set(models)];
  const expires = value("expires");
  if (expires && !WHOLE.test(expires)) wrong.push("expires");
  else if (expires) body.expires_in_days = Number(expires);
  const limits = {};
  for (const name of ["rpm", "tpm"]) {
    const text = value(name);
    if (text && !WHOLE.test(text)) wrong.push(name);
    else if (text) limits[name] = Number(text);
  }
  for (const name of ["daily_usd", "monthly_usd"]) {
    const text = value(name);
    if (text && !DECIMAL.test(text)) wrong.push(name);
    else if (text) limits[name] = text; // a decimal string, never a float
  }
  if (Object.keys(limits).length) body.limits = limits;
  return { body, wrong };
}

// The form field an API error names: its `param` ("name", "limits.rpm", ...), or for
// "limits" as a whole the limit its message names (an identifier, not prose).
function fieldOf(error) {
  const param = error.param || "";
  if (param === "name") return "name";
  if (param.startsWith("models")) return "models";
  if (param === "expires_in_days") return "expires";
  if (param.startsWith("limits")) {
    const which =
      param.split(".")[1] || (/\b(rpm|tpm|daily_usd|monthly_usd)\b/.exec(error.detail || "") || [])[1];
    return which && FIELDS[which] ? which : "limits";
  }
  return null;
}

// -- the confirmation dialog ------------------------------------------------------------------

function confirmDialog(orgId, reload) {
  const dialog = $("key-dialog");
  const form = $("key-dialog-form");
  const confirm = $("key-dialog-confirm");
  const cancel = $("key-dialog-cancel");
  const grace = $("key-grace");
  const error = $("key-dialog-error");
  let current = null; // {kind, key, opener}

  function setError(text) {
    error.textContent = text || "";
    error.hidden = !text;
  }

  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    const opener = current?.opener;
    const done = current?.done;
    current = null;
    // Back where the person was: the button that opened it, else the list's heading.
    if (done) return;
    if (opener && opener.isConnected) opener.focus();
    else $("keys-list-title").focus();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!current || confirm.disabled) return;
    const { kind, key } = current;
    confirm.disabled = true;
    cancel.disabled = true;
    setError("");
    status(t("keys.working"));
    try {
      if (kind === "revoke") {
        await api("DELETE", `/api/orgs/${orgId}/keys/${encodeURIComponent(key.key_id)}`);
        current.done = true;
        dialog.close();
        await reload();
        status(t("keys.revoked_done", { name: keyName(key) }), "ok");
        $("keys-list-title").focus();
      } else {
        const seconds = Number(grace.value);
        const rotated = await api(
          "POST",
          `/api/orgs/${orgId}/keys/${encodeURIComponent(key.key_id)}/rotate`,
          { grace_seconds: seconds },
        );
        current.done = true;
        dialog.close();
        const ends = rotated.rotated_from_revoked_at;
        const note =
          seconds > 0 && ends
            ? t("keys.old_key_until", { time: formatTime(epochIso(ends)) })
            : t("keys.old_key_stopped");
        await reload();
        status(t("keys.rotated_done", { name: keyName(key) }), "ok");
        showNewKey(rotated.api_key, note);
      }
    } catch (failure) {
      setError(message(failure));
      status(message(failure), "error");
    } finally {
      confirm.disabled = false;
      cancel.disabled = false;
    }
  });

  return function open(kind, key, opener) {
    current = { kind, key, opener, done: false };
    const name = keyName(key);
    $("key-dialog-title").textContent = t(`keys.dialog_${kind}_title`, { name });
    $("key-dialog-text").textContent = t(`keys.dialog_${kind}_text`);
    $("key-dialog-grace").hidden = kind !== "rotate";
    grace.value = "0";
    confirm.textContent = t(`keys.${kind}`);
    confirm.className = kind === "revoke" ? "danger" : "";
    setError("");
    dialog.showModal();
    cancel.focus(); // the safe choice first; Escape closes too
  };
}

// -- the page ---------------------------------------------------------------------------------

export async function render(ctx) {
  const { orgId } = ctx;
  if (!orgId) return;
  const canManage = MANAGERS.has(ctx.role);
  const list = $("keys-list");
  const openDialog = canManage ? confirmDialog(orgId, reload) : null;

  async function reload() {
    const answer = await api("GET", `/api/orgs/${orgId}/keys`);
    if (!answer.keys.length) {
      list.replaceChildren(el("p", { class: "muted", id: "keys-none" }, t("keys.none")));
      return;
    }
    list.replaceChildren(
      el(
        "div",
        {
          class: "table-wrap keys-wrap",
          tabindex: "0",
          role: "region",
          "aria-labelledby": "keys-list-title",
        },
        keysTable(answer.keys, canManage, (kind, key, opener) => openDialog(kind, key, opener)),
      ),
    );
  }

  $("keys-readonly").hidden = canManage;
  $("key-create").hidden = !canManage;
  if (canManage) {
    const form = $("key-create-form");
    const submit = $("key-create-submit");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (submit.disabled) return;
      clearErrors();
      const { body, wrong } = readForm();
      if (wrong.length) {
        for (const name of wrong) fieldError(name, t(FIELDS[name]));
        formError(t("keys.form_has_errors"));
        $(`key-${wrong[0]}`).focus();
        return;
      }
      submit.disabled = true;
      status(t("keys.creating"));
      try {
        const created = await api("POST", `/api/orgs/${orgId}/keys`, body);
        form.reset();
        await reload();
        status(t("keys.created", { name: created.name || t("keys.unnamed") }), "ok");
        showNewKey(created.api_key, null);
      } catch (error) {
        const field = error.status === 400 ? fieldOf(error) : null;
        if (field) {
          fieldError(field, t(FIELDS[field]));
          formError(t("keys.form_has_errors"));
          (field === "limits" ? $("key-rpm") : $(`key-${field}`)).focus();
        } else {
          formError(message(error));
          $("key-form-error").focus();
        }
        status(message(error), "error");
      } finally {
        submit.disabled = false;
      }
    });
  }

  try {
    await reload();
  } catch (error) {
    status(message(error), "error");
  }
}
