// PostHog, loaded only after the visitor accepted analytics (site/consent.js imports this
// module dynamically, so it is a chunk of its own and no public page fetches it before).
// The build of posthog-js that never loads a script at run time (slim: no recorder, no
// surveys, no autocapture bundled at all), set to capture page views and page leaves only:
// no session recording, no surveys, no autocapture (so nothing typed), no heatmaps, no
// feature flags or remote config call, no external dependency. Only the public pages carry
// the banner that leads here; the console never imports this module.
import { posthog } from "posthog-js/dist/module.slim.no-external.js";

let stopped = false; // consent withdrawn: every later event is dropped before it is sent

export function startAnalytics({ key, host, cookieDays }) {
  posthog.init(key, {
    api_host: host,
    disable_external_dependency_loading: true,
    advanced_disable_flags: true,
    advanced_disable_feature_flags: true,
    disable_session_recording: true,
    disable_surveys: true,
    disable_surveys_automatic_display: true,
    disable_web_experiments: true,
    disable_product_tours: true,
    disable_conversations: true,
    autocapture: false,
    rageclick: false,
    capture_dead_clicks: false,
    capture_heatmaps: false,
    enable_heatmaps: false,
    capture_exceptions: false,
    capture_performance: false,
    capture_pageview: true,
    capture_pageleave: true,
    respect_dnt: true, // a browser saying Do Not Track or Global Privacy Control: nothing
    opt_out_persistence_by_default: true, // opting out removes PostHog's stored identity
    mask_all_text: true,
    mask_all_element_attributes: true,
    mask_personal_data_properties: true,
    person_profiles: "identified_only",
    // Each event is sent as it happens, never queued: withdrawing consent leaves nothing
    // waiting to be flushed when the page unloads.
    request_batching: false,
    persistence: "localStorage+cookie",
    cookie_expiration: cookieDays || 365,
    save_referrer: false,
    before_send: withoutPrivatePaths,
  });
  return {
    // Withdrawal: PostHog opts out (and removes its persistence); site/consent.js then
    // clears what is left and reloads. Until the page is gone, nothing more is sent, not
    // even the page-leave event of that reload.
    stop() {
      stopped = true;
      posthog.opt_out_capturing();
    },
  };
}

// An event is dropped once consent is withdrawn, and never carries a signed-in page's address: a referrer inside the console or the
// API (a visitor coming back from /console) is cut to this site's origin.
function withoutPrivatePaths(event) {
  if (stopped) return null;
  if (!event || !event.properties) return event;
  for (const name of ["$referrer", "$initial_referrer"]) {
    const value = event.properties[name];
    if (typeof value === "string" && isPrivate(value)) event.properties[name] = window.location.origin;
  }
  return event;
}

function isPrivate(url) {
  try {
    const parsed = new URL(url);
    return (
      parsed.origin === window.location.origin &&
      (parsed.pathname.startsWith("/console") || parsed.pathname.startsWith("/api"))
    );
  } catch {
    return false;
  }
}
