// Validates glTF/GLB files with the Khronos glTF validator; prints one JSON report summary per file.
// Usage: node tools/gltf_validate.js FILE...  (exit 1 when any file has errors or warnings)
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

async function validate(file) {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const report = await validator.validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: 0,
    externalResourceFunction: (uri) =>
      Promise.resolve(new Uint8Array(fs.readFileSync(path.resolve(path.dirname(file), decodeURIComponent(uri))))),
  });
  const counts = {};
  for (const m of report.issues.messages) counts[m.code] = (counts[m.code] || 0) + 1;
  return { file, errors: report.issues.numErrors, warnings: report.issues.numWarnings,
           infos: report.issues.numInfos, codes: counts, validator: report.validatorVersion };
}

(async () => {
  let bad = false;
  for (const file of process.argv.slice(2)) {
    const r = await validate(file);
    bad = bad || r.errors > 0 || r.warnings > 0;
    console.log(JSON.stringify(r));
  }
  process.exit(bad ? 1 : 0);
})().catch((e) => { console.error(String(e)); process.exit(2); });
