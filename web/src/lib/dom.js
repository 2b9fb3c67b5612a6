// Small DOM helpers: elements are made with textContent (never innerHTML from data), so
// nothing the API returns can become markup.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A table: headers are strings, rows are arrays of cells (strings or nodes).
export function table(caption, headers, rows) {
  return el(
    "table",
    {},
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell) => el("td", {}, cell))))),
  );
}

export function status(message, kind = "info") {
  const node = document.getElementById("status");
  if (!node) return;
  node.textContent = message;
  node.dataset.kind = kind;
}

// Dates and money in the page's language; money arrives as decimal strings and is shown
// as written (never through a float).
export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime())
    ? String(iso)
    : date.toLocaleString(document.documentElement.lang, { timeZone: "UTC", hour12: false }) + " UTC";
}

export function formatUsd(decimal) {
  if (decimal === null || decimal === undefined) return "";
  return `$${decimal}`;
}
