// Builds the web app into dist/: one bundled, minified, content-hashed JS and CSS file,
// index.html pointing at them, and the static assets. mqtt.js comes from node_modules
// (npm, at build time); nothing is loaded from a CDN at run time.
//
// The new build is written next to dist/ and swapped in by rename, so an API serving dist/
// never sees a half-written app.

import { build } from "esbuild";
import { cp, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, "src");
const out = path.join(here, "dist");
const staging = path.join(here, `.dist-${process.pid}`);

await rm(staging, { recursive: true, force: true });
await mkdir(staging, { recursive: true });

const result = await build({
  entryPoints: [path.join(src, "main.js"), path.join(src, "styles.css")],
  outdir: staging,
  entryNames: "[name]-[hash]",
  bundle: true,
  minify: true,
  sourcemap: true,
  format: "esm",
  platform: "browser",
  target: ["es2020", "chrome90", "firefox90", "safari15"],
  legalComments: "linked", // mqtt.js and its dependencies' licence notices ship with the app
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.entries(result.metafile.outputs);
const find = (entry) => {
  const hit = outputs.find(([, o]) => o.entryPoint && o.entryPoint.endsWith(entry));
  if (!hit) throw new Error(`build: no output for ${entry}`);
  return path.basename(hit[0]);
};
const js = find("src/main.js");
const css = find("src/styles.css");

const html = (await readFile(path.join(src, "index.html"), "utf8"))
  .replace("__JS__", `./${js}`)
  .replace("__CSS__", `./${css}`);
await writeFile(path.join(staging, "index.html"), html);
await cp(path.join(src, "favicon.svg"), path.join(staging, "favicon.svg"));

const old = `${out}.old-${process.pid}`;
await rm(old, { recursive: true, force: true });
try {
  await rename(out, old);
} catch (error) {
  if (error.code !== "ENOENT") throw error;
}
await rename(staging, out);
await rm(old, { recursive: true, force: true });

const size = (name) => result.metafile.outputs[path.relative(process.cwd(), path.join(staging, name))]?.bytes;
console.log(`web: built dist/ (${js}${size(js) ? ` ${Math.round(size(js) / 1024)} KiB` : ""}, ${css})`);
