// Copies the browser libraries the pages use from node_modules into api/static/vendor/.
// The output is committed, so running the app (and `make demo`) never needs npm or a CDN;
// `make assets` reruns `npm ci && npm run build` to refresh it from the pinned lockfile.
//   vis-network:     the dashboard's network view (standalone UMD build: its CSS and peers are inlined)
//   swagger-ui-dist: the interactive API reference at /docs
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "api", "static", "vendor");

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
