// The page's words, embedded by the server as JSON (<script type="application/json"
// id="strings">: data, not script, so the CSP allows it). t("area.key", {n: 3}).
let words = null;

export function t(key, values = {}) {
  if (words === null) {
    const node = document.getElementById("strings");
    words = node ? JSON.parse(node.textContent) : {};
  }
  const text = words[key];
  if (text === undefined) throw new Error(`missing string ${key}`);
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

export function has(key) {
  t("common.error_generic"); // loads the words
  return words[key] !== undefined;
}

export const lang = () => document.documentElement.lang || "en";
