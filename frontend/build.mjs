// Builds the browser files the app serves, all committed, so running the app (and `make demo`) never needs npm or
// a CDN; `make assets` reruns `npm ci && npm run build` to refresh them from the pinned lockfile.
//
// api/static/vendor/: libraries copied as published from node_modules
//   vis-network:     the dashboard's network view (standalone UMD build: its CSS and peers are inlined)
//   swagger-ui-dist: the interactive API reference at /docs
// api/static/widget/: our embeddable share widget, frontend/widget/src bundled and minified by esbuild into one
//   classic script (styles inlined), with manifest.json naming its version, size and SRI hash (docs/widget.md)
//
// `node build.mjs --check-widget` writes nothing: it fails if the committed widget differs from its sources.
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build, transform, version as esbuildVersion } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "api", "static", "vendor");
const widgetOut = join(here, "..", "api", "static", "widget");
const widgetFile = "advocacy-share.js";

const packages = {
  "vis-network": [
    ["standalone/umd/vis-network.min.js", "vis-network.min.js"],
    ["LICENSE-APACHE-2.0", "vis-network.LICENSE-APACHE-2.0.txt"],
    ["LICENSE-MIT", "vis-network.LICENSE-MIT.txt"],
  ],
  "swagger-ui-dist": [
    ["swagger-ui-bundle.js", "swagger-ui/swagger-ui-bundle.js"],
    ["swagger-ui-bundle.js.LICENSE.txt", "swagger-ui/swagger-ui-bundle.js.LICENSE.txt"],
    ["swagger-ui.css", "swagger-ui/swagger-ui.css"],
    ["favicon-32x32.png", "swagger-ui/favicon-32x32.png"],
    ["LICENSE", "swagger-ui/LICENSE.txt"],
    ["NOTICE", "swagger-ui/NOTICE.txt"],
  ],
};

function vendor() {
  rmSync(out, { recursive: true, force: true });
  const versions = {};
  for (const [name, files] of Object.entries(packages)) {
    const pkg = join(here, "node_modules", name);
    for (const [from, to] of files) {
      mkdirSync(dirname(join(out, to)), { recursive: true });
      copyFileSync(join(pkg, from), join(out, to));
    }
    versions[name] = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).version;
  }
  writeFileSync(join(out, "VERSIONS.json"), JSON.stringify(versions, null, 2) + "\n");
  console.log(`vendored ${Object.entries(versions).map(([n, v]) => `${n} ${v}`).join(", ")} into ${out}`);
}

/** `import css from "./x.css"` gives the stylesheet, minified, as a string for the shadow root. */
const cssAsText = {
  name: "css-as-text",
  setup(bundle) {
    bundle.onLoad({ filter: /\.css$/ }, async ({ path }) => {
      const { code } = await transform(readFileSync(path, "utf8"), { loader: "css", minify: true });
      return { contents: `export default ${JSON.stringify(code.trim())};`, loader: "js" };
    });
  },
};

/** The widget's bundle and its manifest, in memory. */
async function bundleWidget() {
  const { version, license } = JSON.parse(readFileSync(join(here, "package.json"), "utf8"));
  const result = await build({
    entryPoints: [join(here, "widget", "src", "advocacy-share.js")],
    outfile: join(widgetOut, widgetFile),
    write: false,
    bundle: true,
    minify: true,
    format: "iife",
    target: "es2022",
    legalComments: "none",
    define: { __WIDGET_VERSION__: JSON.stringify(version) },
    banner: { js: `/*! <advocacy-share> ${version} | ${license} | frontend/widget, esbuild ${esbuildVersion} */` },
    plugins: [cssAsText],
    logLevel: "warning",
  });
  const code = Buffer.from(result.outputFiles[0].contents);
  const manifest = {
    name: "advocacy-share",
    version,
    license,
    file: widgetFile,
    bytes: code.length,
    integrity: `sha384-${createHash("sha384").update(code).digest("base64")}`,
    esbuild: esbuildVersion,
  };
  return { code, manifest: JSON.stringify(manifest, null, 2) + "\n" };
}

const widget = await bundleWidget();
const files = [
  [widgetFile, widget.code],
  ["manifest.json", Buffer.from(widget.manifest)],
];
if (process.argv.includes("--check-widget")) {
  const stale = files.filter(([name, data]) => {
    const path = join(widgetOut, name);
    return !existsSync(path) || !readFileSync(path).equals(data);
  });
  if (stale.length) {
    console.error(`api/static/widget is stale (${stale.map(([n]) => n).join(", ")}): run \`make assets\``);
    process.exit(1);
  }
  console.log(`api/static/widget matches frontend/widget (${widget.code.length} bytes)`);
} else {
  vendor();
  rmSync(widgetOut, { recursive: true, force: true });
  mkdirSync(widgetOut, { recursive: true });
  for (const [name, data] of files) writeFileSync(join(widgetOut, name), data);
  console.log(`bundled ${widgetFile} (${widget.code.length} bytes) into ${widgetOut}`);
}
