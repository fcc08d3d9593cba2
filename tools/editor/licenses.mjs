// Print the licence of every npm package that esbuild put into the bundle (from its metafile),
// sorted, so the vendored file ships with exactly the notices it needs and rebuilds identically.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

const meta = JSON.parse(readFileSync(process.argv[2], "utf8"));
const packages = new Set();
for (const input of Object.keys(meta.inputs)) {
  const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (m) packages.add(m[1]);
}
const out = [
  "Third-party software in codemirror.js (bundled by tools/build-editor.sh from the npm registry).",
  "",
];
for (const name of [...packages].sort()) {
  const dir = join("node_modules", name);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)/i.test(f));
  if (!file) throw new Error(`${name} has no licence file`);
  out.push("=".repeat(78), `${name}@${pkg.version} (${pkg.license})`, "=".repeat(78));
  out.push(readFileSync(join(dir, file), "utf8").trim(), "");
}
process.stdout.write(out.join("\n"));
