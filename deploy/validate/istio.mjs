// Validates the Istio resources (apiVersion *.istio.io/*) in the YAML files given as arguments
// against the JSON schemas of @kubernetes-models/istio, offline. Other kinds are skipped (they
// are checked by kubernetes-validate). Exits 1 on the first file with an invalid or unknown
// Istio resource, naming the file, the document and the error.
//
//   node deploy/validate/istio.mjs FILE.yaml...
import { readFileSync } from "node:fs";
import yaml from "js-yaml";

let checked = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  const docs = yaml.loadAll(readFileSync(file, "utf8")).filter((d) => d);
  for (const [i, doc] of docs.entries()) {
    const [group, version] = String(doc.apiVersion ?? "").split("/");
    if (!group.endsWith("istio.io")) continue;
    const where = `${file}#${i} ${doc.kind}/${doc.metadata?.name ?? "?"}`;
    let Model;
    try {
      const mod = await import(`@kubernetes-models/istio/${group}/${version}/${doc.kind}`);
      Model = mod[doc.kind];
    } catch (e) {
      console.error(`${where}: unknown Istio kind ${doc.apiVersion} ${doc.kind}: ${e.message}`);
      failed++;
      continue;
    }
    try {
      new Model(doc).validate();
      console.log(`ok   ${where}`);
      checked++;
    } catch (e) {
      console.error(`FAIL ${where}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`istio: ${checked} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
