// The web pages' assets: esbuild bundles web/src into layers/dynoyard/dynoyard/web/static/,
// every name content-hashed (served immutable), each beside a .gz twin, and manifest.json
// mapping entry names ("site.js", "console.js", "site.css") to the hashed files with their
// gzip sizes. `npm run build` (make dev, make test, sam build) runs it; nothing loads from a
// CDN: uPlot and posthog-js come from npm into these files.
import { build } from "esbuild";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const out = join(root, "layers/dynoyard/dynoyard/web/static");
// Earlier builds' files stay (a running server may still serve their names); the layer's
// build (layers/dynoyard/Makefile) copies only this build's.
mkdirSync(out, { recursive: true });

// The manifest's entry names, by source.
const ENTRIES = {
  "web/src/site.js": "site.js", // public pages: the sign-in form, the consent banner
  "web/src/console/main.js": "console.js", // the signed-in pages
  "web/src/styles.css": "styles.css",
};

const result = await build({
  absWorkingDir: root,
  entryPoints: {
    site: "web/src/site.js",
    console: "web/src/console/main.js",
    styles: "web/src/styles.css",
  },
  bundle: true,
  splitting: true, // the analytics chunk loads only after consent
  format: "esm",
  minify: true,
  target: ["es2020"],
  outdir: out,
  entryNames: "[name]-[hash]",
  chunkNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  legalComments: "linked",
  logLevel: "warning",
});

const importsOf = (meta, kind) =>
  (meta.imports || []).filter((i) => !i.external && i.kind === kind).map((i) => basename(i.path));

const manifest = { entries: {}, files: {} };
for (const [file, meta] of Object.entries(result.metafile.outputs)) {
  const name = basename(file);
  const bytes = readFileSync(join(root, file));
  const gz = gzipSync(bytes, { level: 9 });
  writeFileSync(join(root, file + ".gz"), gz);
  manifest.files[name] = {
    bytes: bytes.length,
    gzip_bytes: gz.length,
    // What the file loads at once (static imports), and what only on demand (`import()`:
    // the analytics chunk, after consent): the budget counts the first.
    imports: importsOf(meta, "import-statement"),
    dynamic_imports: importsOf(meta, "dynamic-import"),
  };
  if (ENTRIES[meta.entryPoint]) manifest.entries[ENTRIES[meta.entryPoint]] = name;
}
writeFileSync(join(out, "manifest.json.tmp"), JSON.stringify(manifest, null, 1));
renameSync(join(out, "manifest.json.tmp"), join(out, "manifest.json")); // never half-written
console.log(`web: ${Object.keys(manifest.files).length} files in ${relative(root, out)}`);
