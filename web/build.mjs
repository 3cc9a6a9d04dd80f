// Builds the web app into dist/: one bundled, minified, content-hashed JS and CSS file under
// dist/assets/ (the API caches that folder for a year), index.html pointing at them, the
// service worker and the static assets; every text file also as .br and .gz (pre-compressed
// once here, never per request). mqtt.js comes from node_modules
// (npm, at build time); nothing is loaded from a CDN at run time.
//
// The new build is written next to dist/ and swapped in by rename, so an API serving dist/
// never sees a half-written app.

import { build } from "esbuild";
import { cp, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import zlib from "node:zlib";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, "src");
const out = path.join(here, "dist");
const staging = path.join(here, `.dist-${process.pid}`);

await rm(staging, { recursive: true, force: true });
await mkdir(staging, { recursive: true });

// `import catalogs from "virtual:locales"`: every src/locales/<lang>.json, so adding a
// language is adding a file.
const locales = {
  name: "locales",
  setup(b) {
    b.onResolve({ filter: /^virtual:locales$/ }, () => ({ path: "locales", namespace: "locales" }));
    b.onLoad({ filter: /.*/, namespace: "locales" }, async () => {
      const dir = path.join(src, "locales");
      const catalogs = {};
      for (const name of (await readdir(dir)).sort()) {
        if (name.endsWith(".json")) catalogs[name.slice(0, -5)] = JSON.parse(await readFile(path.join(dir, name), "utf8"));
      }
      if (!catalogs.en) throw new Error("build: src/locales/en.json is missing");
      return { contents: `export default ${JSON.stringify(catalogs)};`, loader: "js", watchDirs: [dir] };
    });
  },
};

const result = await build({
  plugins: [locales],
  entryPoints: [path.join(src, "main.js"), path.join(src, "styles.css")],
  outdir: path.join(staging, "assets"),
  entryNames: "[name]-[hash]",
  chunkNames: "chunk-[hash]", // code loaded on demand (Firebase messaging, when configured)
  splitting: true,
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
  .replace("__JS__", `./assets/${js}`)
  .replace("__CSS__", `./assets/${css}`);
await writeFile(path.join(staging, "index.html"), html);
await cp(path.join(src, "favicon.svg"), path.join(staging, "favicon.svg"));
for (const extra of ["sw.js"]) {
  try {
    await cp(path.join(src, extra), path.join(staging, extra));
  } catch (error) {
    if (error.code !== "ENOENT") throw error;
  }
}

// Pre-compress every text file (brotli at maximum quality, gzip -9): done once per build.
const brotli = promisify(zlib.brotliCompress);
const gzip = promisify(zlib.gzip);
const COMPRESSIBLE = /\.(js|css|html|svg|json|map|txt)$/;
let compressed = 0;
for (const entry of await readdir(staging, { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || !COMPRESSIBLE.test(entry.name)) continue;
  const file = path.join(entry.parentPath ?? entry.path, entry.name);
  const data = await readFile(file);
  if (data.length < 256) continue;
  await writeFile(`${file}.br`, await brotli(data, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11 } }));
  await writeFile(`${file}.gz`, await gzip(data, { level: 9 }));
  compressed += 1;
}

const old = `${out}.old-${process.pid}`;
await rm(old, { recursive: true, force: true });
try {
  await rename(out, old);
} catch (error) {
  if (error.code !== "ENOENT") throw error;
}
await rename(staging, out);
await rm(old, { recursive: true, force: true });

const size = (name) => result.metafile.outputs[path.relative(process.cwd(), path.join(staging, "assets", name))]?.bytes;
console.log(`web: built dist/ (${js}${size(js) ? ` ${Math.round(size(js) / 1024)} KiB` : ""}, ${css}; ${compressed} files pre-compressed)`);
