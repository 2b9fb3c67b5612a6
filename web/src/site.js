// The public pages' script: the sign-in form where there is one. (The consent banner and
// the analytics it may load: site/consent.js.)
import { wireSignIn } from "./site/sign_in.js";

const form = document.getElementById("email-link-form");
if (form) wireSignIn(form);
