// The console API from the pages: same-origin fetch with the session cookie, the CSRF token
// of /api/me on every state-changing call, errors turned into ApiError with a message in the
// page's language (errors.<code> when the strings have it, else the generic one).
import { has, t } from "./i18n.js";

let csrf = "";

// `param` is the field the API names (a form marks it); `detail` the API's own English
// message, for logic only (never shown: `message` is the person's language).
export class ApiError extends Error {
  constructor(status, code, message, param = null, detail = "") {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
    this.detail = detail;
  }
}

export function setCsrf(token) {
  csrf = token;
}

export async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = csrf;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", t("common.error_network"));
  }
  if (response.status === 401 && !path.startsWith("/api/auth/")) {
    window.location.assign("/sign-in");
    throw new ApiError(401, "signed_out", t("common.error_signed_out"));
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = data?.error?.code || `http_${response.status}`;
    const key = `errors.${code}`;
    const message = has(key) ? t(key) : t("common.error_generic");
    throw new ApiError(response.status, code, message, data?.error?.param || null, data?.error?.message || "");
  }
  return data;
}
