//! Holds what the server sends to the document it serves: instances checked against the
//! document's own component schemas by an independent JSON Schema validator (PyPI
//! `jsonschema`, which `make test` installs with `openapi-spec-validator`).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

const CHECK: &str = r##"
import json, sys
from jsonschema import Draft202012Validator
job = json.load(sys.stdin)
failed = []
for name, instance in job["instances"]:
    schema = {"$ref": "#/components/schemas/" + name, "components": job["components"]}
    for error in Draft202012Validator(schema).iter_errors(instance):
        failed.append(f"{name}: {error.message} at {list(error.absolute_path)}: {json.dumps(instance)[:300]}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"##;

/// Panics with every mismatch if any `(schema name, instance)` does not match `doc`.
pub fn assert_matches(doc: &Value, instances: &[(String, Value)]) {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools-venv/bin/python");
    let job = json!({
        "components": { "schemas": doc["components"]["schemas"] },
        "instances": instances,
    });
    let mut child = Command::new(&python)
        .args(["-c", CHECK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} ({e}): run `make test-deps`", python.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(job.to_string().as_bytes())
        .expect("written");
    let out = child.wait_with_output().expect("validator ran");
    assert!(
        out.status.success(),
        "not as the document says:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
