//! Writing playbooks: `keywheel init` for every issuer and target, and
//! `keywheel schema` against the repository's playbooks and broken ones.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::support::{EXIT_OK, EXIT_USAGE, TestEnv};

const ISSUERS: &[&str] = &["random", "http", "command", "aws_iam"];
const TARGETS: &[&str] = &["file", "dotenv", "vault", "kubernetes", "aws_secret"];

fn schema(env: &TestEnv) -> jsonschema::Validator {
    let run = env.keywheel(&["schema"]);
    run.assert_code(EXIT_OK);
    let schema = run.json();
    jsonschema::draft202012::new(&schema).expect("a valid JSON Schema")
}

/// Returns the schema's errors for a playbook, converted from YAML as an editor
/// would see it.
fn schema_errors(validator: &jsonschema::Validator, text: &str) -> Vec<String> {
    let root = keywheel::playbook::yaml::parse(text).expect("valid YAML");
    let instance = keywheel::playbook::yaml::to_json(&root);
    validator
        .iter_errors(&instance)
        .map(|err| format!("{}: {err}", err.instance_path()))
        .collect()
}

fn repository_playbooks() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn schema_accepts_repository_playbooks() {
    let env = TestEnv::new();
    let validator = schema(&env);
    let paths = repository_playbooks();
    assert!(paths.len() >= 7, "{paths:?}");

    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let errors = schema_errors(&validator, &text);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn schema_and_validate_reject_unknown_field() {
    let env = TestEnv::new();
    let validator = schema(&env);
    let text = "version: 1
name: typo
issuer:
  type: random
  lenght: 32
targets:
  - name: env
    type: dotenv
    path: app.env
    set:
      API_KEY: secret
";
    let path = env.playbook("typo.yaml", text);

    let errors = schema_errors(&validator, text);
    let run = env.keywheel(&["validate", path.to_str().unwrap()]);

    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("/issuer"), "{errors:?}");
    assert!(errors[0].contains("lenght"), "{errors:?}");
    run.assert_code(EXIT_USAGE);
    assert!(
        run.stderr.contains("issuer.lenght: unknown field"),
        "{}",
        run.stderr
    );
}

#[test]
fn schema_and_validate_reject_wrong_type() {
    let env = TestEnv::new();
    let validator = schema(&env);
    let text = "version: 1
name: wrong-type
issuer:
  type: random
targets:
  - name: env
    type: dotenv
    path: app.env
    set:
      API_KEY: secret
    create: yes
    mode: 0600
";
    let path = env.playbook("wrong.yaml", text);

    let errors = schema_errors(&validator, text);
    let run = env.keywheel(&["validate", path.to_str().unwrap()]);

    assert!(
        errors.iter().any(|e| e.starts_with("/targets/0/create")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with("/targets/0/mode")),
        "{errors:?}"
    );
    run.assert_code(EXIT_USAGE);
    assert!(run.stderr.contains("targets[0].create"), "{}", run.stderr);
    assert!(run.stderr.contains("targets[0].mode"), "{}", run.stderr);
}

/// Runs `keywheel init` into FILE and `keywheel validate --json` on it.
fn init_and_validate(env: &TestEnv, issuer: &str, targets: &[&str], file: &str) {
    let mut args = vec!["init", "--issuer", issuer, "--output", file];
    for target in targets {
        args.extend(["--target", target]);
    }
    env.keywheel(&args).assert_code(EXIT_OK);

    let run = env.keywheel(&["validate", "--json", file]);
    let result = &run.json()["playbooks"][0];
    assert_eq!(result["valid"], true, "{issuer} {targets:?}: {result}");
    assert_eq!(result["name"], file.trim_end_matches(".yaml"));
    let warnings = result["warnings"].as_array().unwrap();
    for warning in warnings {
        let message = warning["message"].as_str().unwrap();
        assert!(
            message.contains("change-me"),
            "{issuer} {targets:?}: {warning}"
        );
    }
    run.assert_code(EXIT_OK);
}

#[test]
fn init_output_validates_for_every_combination() {
    let env = TestEnv::new();
    let validator = schema(&env);

    for issuer in ISSUERS {
        for target in TARGETS {
            let file = format!("{issuer}-{target}.yaml");
            init_and_validate(&env, issuer, &[target], &file);
            let text = std::fs::read_to_string(env.path(&file)).unwrap();
            let errors = schema_errors(&validator, &text);
            assert!(errors.is_empty(), "{file}: {errors:#?}");
        }
        let file = format!("{issuer}-all.yaml");
        init_and_validate(&env, issuer, TARGETS, &file);
    }
}

#[test]
fn init_prints_to_stdout_by_default() {
    let env = TestEnv::new();

    let run = env.keywheel(&["init", "--issuer", "random", "--target", "dotenv"]);

    run.assert_code(EXIT_OK);
    assert!(run.stdout.contains("type: random"), "{}", run.stdout);
    assert!(run.stdout.contains("name: change-me"), "{}", run.stdout);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn init_keeps_existing_file_without_force() {
    let env = TestEnv::new();
    let path = env.playbook("existing.yaml", "# mine\n");
    let file = path.to_str().unwrap();
    let args = ["init", "--issuer", "random", "--target", "file", "-o", file];

    let refused = env.keywheel(&args);
    let forced = env.keywheel(&[&args[..], &["--force"]].concat());

    refused.assert_code(EXIT_USAGE);
    assert!(
        refused.stderr.contains("pass --force"),
        "{}",
        refused.stderr
    );
    forced.assert_code(EXIT_OK);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("name: existing"), "{text}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn init_rejects_invalid_name() {
    let env = TestEnv::new();

    let run = env.keywheel(&[
        "init", "--issuer", "random", "--target", "dotenv", "--name", "my key",
    ]);

    run.assert_code(EXIT_USAGE);
    assert!(
        run.stderr.contains("invalid name \"my key\""),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
