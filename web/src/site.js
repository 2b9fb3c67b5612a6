// The public pages' script: the sign-in form where there is one, and the analytics consent
// banner where the page has one (site/consent.js; analytics loads only after consent).
import { startConsent } from "./site/consent.js";
import { wireSignIn } from "./site/sign_in.js";

const form = document.getElementById("email-link-form");
if (form) wireSignIn(form);
startConsent();
