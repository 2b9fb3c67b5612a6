"""The web pages: the public site (/, /pricing, /privacy, /terms, /sign-in) and the console
(/console/...), served by the console function beside its API. Server-rendered HTML
(Jinja2) in the visitor's language, with small built scripts (web/src, `npm run build`)
that call the console API. See docs/web.md."""
