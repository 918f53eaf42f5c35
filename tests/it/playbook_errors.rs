//! Every class of playbook error gets its own message, line and hint, and
//! all errors of a playbook are reported in one call.

use crate::support::{EXIT_OK, EXIT_USAGE, TestEnv};

const HEAD: &str = "version: 1\nname: t\nissuer:\n  type: random\n";

/// A playbook with one file target whose extra fields are `target_extra`.
fn with_target(target_extra: &str) -> String {
    format!("{HEAD}targets:\n  - name: f\n    type: file\n    path: out.key\n{target_extra}")
}

struct Case {
    name: &'static str,
    text: String,
    line: usize,
    field: &'static str,
    message: &'static str,
    hint: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "yes in a boolean field",
            text: with_target("    create: yes\n"),
            line: 9,
            field: "targets[0].create",
            message: "expected true or false, found `yes`",
            hint: "write true or false",
        },
        Case {
            name: "quoted boolean",
            text: with_target("    create: \"true\"\n"),
            line: 9,
            field: "targets[0].create",
            message: "expected true or false",
            hint: "write true without quotes",
        },
        Case {
            name: "bare octal mode",
            text: with_target("    mode: 0600\n"),
            line: 9,
            field: "targets[0].mode",
            message: "file mode 0600 is ambiguous",
            hint: "write the mode as 0o600 or as the quoted string \"0600\"",
        },
        Case {
            name: "quoted number",
            text: "version: 1\nname: t\nissuer:\n  type: random\n  length: \"32\"\ntargets:\n  - name: f\n    type: file\n    path: k\n".to_string(),
            line: 5,
            field: "issuer.length",
            message: "expected a whole number, found the string \"32\"",
            hint: "write 32 without quotes",
        },
        Case {
            name: "unknown field with suggestion",
            text: "version: 1\nname: t\nissuer:\n  type: random\n  lenght: 12\ntargets:\n  - name: f\n    type: file\n    path: k\n".to_string(),
            line: 5,
            field: "issuer.lenght",
            message: "unknown field `lenght`",
            hint: "did you mean `length`?",
        },
        Case {
            name: "missing required field",
            text: format!("{HEAD}targets:\n  - name: f\n    type: file\n"),
            line: 6,
            field: "targets[0]",
            message: "missing required field `path`",
            hint: "",
        },
        Case {
            name: "unknown target type",
            text: format!("{HEAD}targets:\n  - name: f\n    type: vaultt\n    path: k\n"),
            line: 7,
            field: "targets[0].type",
            message: "invalid value \"vaultt\"",
            hint: "did you mean `vault`?",
        },
        Case {
            name: "unknown key field",
            text: format!("{HEAD}targets:\n  - name: e\n    type: dotenv\n    path: a.env\n    set:\n      API_KEY: secrt\n"),
            line: 10,
            field: "targets[0].set.API_KEY",
            message: "unknown key field \"secrt\"",
            hint: "did you mean `secret`?",
        },
        Case {
            name: "exclusion empties the alphabet",
            text: "version: 1\nname: t\nissuer:\n  type: random\n  alphabet: digits\n  exclude: \"0123456789\"\ntargets:\n  - name: f\n    type: file\n    path: k\n".to_string(),
            line: 6,
            field: "issuer.exclude",
            message: "no characters are left after the exclusions",
            hint: "exclude fewer characters",
        },
        Case {
            name: "duplicate target names",
            text: format!("{HEAD}targets:\n  - name: f\n    type: file\n    path: a\n  - name: f\n    type: file\n    path: b\n"),
            line: 9,
            field: "targets[1].name",
            message: "duplicate target name \"f\"",
            hint: "target names must be unique; line 6 uses it already",
        },
        Case {
            name: "duplicate yaml key",
            text: format!("{HEAD}targets:\n  - name: f\n    type: file\n    path: a\n    path: b\n"),
            line: 9,
            field: "targets[0].path",
            message: "duplicate key",
            hint: "the key is already set on line 8",
        },
        Case {
            name: "token written inline",
            text: format!("{HEAD}targets:\n  - name: v\n    type: vault\n    mount: secret\n    path: a\n    token: s.abc\n    set:\n      k: secret\n"),
            line: 10,
            field: "targets[0].token",
            message: "`token` cannot be written in a playbook",
            hint: "name that variable in `token_env`",
        },
        Case {
            name: "vault path traversal",
            text: format!("{HEAD}targets:\n  - name: v\n    type: vault\n    mount: secret\n    path: a/../b\n    set:\n      k: secret\n"),
            line: 9,
            field: "targets[0].path",
            message: "invalid segment \"..\"",
            hint: "",
        },
        Case {
            name: "unsupported version",
            text: "version: 2\nname: t\nissuer:\n  type: random\ntargets:\n  - name: f\n    type: file\n    path: k\n".into(),
            line: 1,
            field: "version",
            message: "unsupported playbook version 2",
            hint: "this keywheel reads version 1",
        },
        Case {
            name: "missing version",
            text: "name: t\nissuer:\n  type: random\ntargets:\n  - name: f\n    type: file\n    path: k\n".into(),
            line: 1,
            field: "",
            message: "missing required field `version`",
            hint: "add `version: 1`",
        },
        Case {
            name: "duration without unit",
            text: format!("{HEAD}targets:\n  - name: v\n    type: vault\n    mount: secret\n    path: a\n    timeout: 30\n    set:\n      k: secret\n"),
            line: 10,
            field: "targets[0].timeout",
            message: "has no unit",
            hint: "write a number with a unit",
        },
        Case {
            name: "invalid yaml",
            text: "version: 1\nname: [t\nissuer: x\n".into(),
            line: 3,
            field: "",
            message: "invalid YAML",
            hint: "",
        },
        Case {
            name: "invalid name",
            text: "version: 1\nname: my playbook\nissuer:\n  type: random\ntargets:\n  - name: f\n    type: file\n    path: k\n".into(),
            line: 2,
            field: "name",
            message: "invalid name \"my playbook\"",
            hint: "use 1 to 64 letters",
        },
        Case {
            name: "zero target timeout",
            text: with_target("") + "policy:\n  target_timeout: 0s\n",
            line: 10,
            field: "policy.target_timeout",
            message: "target_timeout must be longer than 0s",
            hint: "give the time one target call may take",
        },
        Case {
            name: "target timeout without unit",
            text: with_target("") + "policy:\n  target_timeout: 30\n",
            line: 10,
            field: "policy.target_timeout",
            message: "duration \"30\" has no unit",
            hint: "write a number with a unit",
        },
    ]
}

#[test]
fn each_error_class_names_line_field_and_hint() {
    let env = TestEnv::new();
    for case in cases() {
        let path = env.playbook("broken.yaml", &case.text);
        let run = env.keywheel(&["validate", path.to_str().unwrap()]);
        assert_eq!(run.code, Some(EXIT_USAGE), "{}: {}", case.name, run.stderr);
        let location = format!("broken.yaml:{}:", case.line);
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(&location) && l.contains(case.message))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no line with {location} and {:?} in:\n{}",
                    case.name, case.message, run.stderr
                )
            });
        assert!(
            line.contains(case.field),
            "{}: field {:?} missing from {line}",
            case.name,
            case.field
        );
        assert!(
            run.stderr.contains(case.hint),
            "{}: hint {:?} missing from:\n{}",
            case.name,
            case.hint,
            run.stderr
        );
    }
}

#[test]
fn all_errors_reported_in_one_call() {
    let env = TestEnv::new();
    let text = "version: 1\nname: t\nissuer:\n  type: random\n  length: 0\ntargets:\n  - name: f\n    type: file\n    path: k\n    create: yes\n    mode: 0600\n    colour: red\n";
    let path = env.playbook("many.yaml", text);
    let run = env.keywheel(&["validate", "--json", path.to_str().unwrap()]);
    run.assert_code(EXIT_USAGE);
    let errors = run.json()["playbooks"][0]["errors"]
        .as_array()
        .unwrap()
        .clone();
    let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [5, 10, 11, 12], "{errors:?}");
}

#[test]
fn validate_checks_many_playbooks() {
    let env = TestEnv::new();
    let good = env.playbook("good.yaml", &with_target(""));
    let bad = env.playbook("bad.yaml", &with_target("    create: on\n"));
    let run = env.keywheel(&["validate", good.to_str().unwrap(), bad.to_str().unwrap()]);
    run.assert_code(EXIT_USAGE);
    assert!(run.stderr.contains("Valid"), "{}", run.stderr);
    assert!(run.stderr.contains("bad.yaml:9:"), "{}", run.stderr);
}

#[test]
fn repository_playbooks_are_valid() {
    let env = TestEnv::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let mut paths: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    let mut args = vec!["validate"];
    args.extend(paths.iter().map(String::as_str));
    env.keywheel(&args).assert_code(EXIT_OK);
}

#[test]
fn missing_playbook_file_is_usage_error() {
    let env = TestEnv::new();
    let run = env.keywheel(&["validate", "does-not-exist.yaml"]);
    run.assert_code(EXIT_USAGE);
    assert!(run.stderr.contains("does-not-exist.yaml"), "{}", run.stderr);
    assert!(run.stderr.contains("file not found"), "{}", run.stderr);
}

#[test]
fn string_no_stays_a_string() {
    let env = TestEnv::new();
    let text = "version: 1\nname: t\nissuer:\n  type: random\n  prefix: no\n  length: 20\ntargets:\n  - name: f\n    type: file\n    path: out.key\n    create: true\n".to_string();
    let path = env.playbook("no.yaml", &text);
    env.keywheel(&["run", path.to_str().unwrap()])
        .assert_code(EXIT_OK);
    let key = std::fs::read_to_string(env.path("out.key")).unwrap();
    env.secret(&key);
    assert!(key.starts_with("no"), "{key}");
    assert_eq!(key.len(), 22);
}

#[test]
fn quoted_mode_is_octal() {
    let env = TestEnv::new();
    let text = with_target("    create: true\n    mode: \"0640\"\n");
    let path = env.playbook("mode.yaml", &text);
    env.keywheel(&["run", path.to_str().unwrap()])
        .assert_code(EXIT_OK);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(env.path("out.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o640);
    env.secret(&std::fs::read_to_string(env.path("out.key")).unwrap());
}

#[test]
fn random_exclusions_hold_over_many_draws() {
    let text = "version: 1\nname: t\nissuer:\n  type: random\n  length: 32\n  alphabet: [alphanumeric, symbols]\n  exclude: \":@/\\\"'\\\\ %\"\ntargets:\n  - name: f\n    type: file\n    path: k\n";
    let playbook =
        keywheel::playbook::parse(std::path::Path::new("t.yaml"), text).expect("valid playbook");
    #[allow(irrefutable_let_patterns)]
    let keywheel::issuers::IssuerKind::Random(spec) = &playbook.issuer.kind else {
        panic!("not a random issuer");
    };
    let excluded = [':', '@', '/', '"', '\'', '\\', ' ', '%'];
    for c in excluded {
        assert!(!spec.alphabet.contains(&c), "{c:?} is in the alphabet");
    }
    for _ in 0..5_000 {
        let value = spec.generate().unwrap();
        let text = value.expose_str().unwrap();
        assert_eq!(text.chars().count(), 32);
        assert!(!text.contains(excluded), "excluded character drawn");
    }
}

#[test]
fn missing_env_var_names_the_field() {
    let env = TestEnv::new();
    let text = format!(
        "{HEAD}targets:\n  - name: v\n    type: vault\n    mount: secret\n    path: a\n    token_env: KEYWHEEL_TEST_UNSET_TOKEN\n    address_env: KEYWHEEL_TEST_UNSET_ADDR\n    set:\n      k: secret\n"
    );
    let path = env.playbook("env.yaml", &text);
    let run = env.keywheel(&["run", path.to_str().unwrap()]);
    run.assert_code(EXIT_USAGE);
    assert!(
        run.stderr.contains(
            "targets[0].address_env: environment variable KEYWHEEL_TEST_UNSET_ADDR is not set"
        ),
        "{}",
        run.stderr
    );
    assert!(
        !env.state_dir
            .join("runs")
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
        "a run was started"
    );
}

#[test]
fn account_id_keeps_leading_zero() {
    // A secret named by a bare twelve-digit AWS account id: YAML 1.1 readers
    // would make it the number 12345678901.
    let text = "version: 1\nname: t\nissuer:\n  type: aws_iam\n  user: deployer\ntargets:\n  - name: s\n    type: aws_secret\n    secret_id: 012345678901\n    field: secret_access_key\n";
    let playbook =
        keywheel::playbook::parse(std::path::Path::new("t.yaml"), text).expect("valid playbook");
    let keywheel::targets::TargetKind::AwsSecret(spec) = &playbook.targets[0].kind else {
        panic!("not an aws_secret target");
    };
    assert_eq!(spec.secret_id, "012345678901");
}
