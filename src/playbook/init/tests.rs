use std::path::Path;

use super::*;
use crate::playbook::decode::Severity;

/// One rendered playbook: its issuer, targets and text.
struct Rendered {
    issuer: &'static str,
    targets: Vec<&'static str>,
    text: String,
}

/// Renders every issuer with each target alone, and with all targets.
fn render_all(enable_optional: bool) -> Vec<Rendered> {
    let mut out = Vec::new();
    for issuer in crate::issuers::KINDS {
        let mut target_lists: Vec<Vec<&str>> =
            crate::targets::KINDS.iter().map(|t| vec![*t]).collect();
        target_lists.push(crate::targets::KINDS.to_vec());
        for targets in target_lists {
            let options = Options {
                issuer,
                targets: &targets,
                name: "app-key",
            };
            let text = render_with(&options, enable_optional).unwrap();
            out.push(Rendered {
                issuer,
                targets,
                text,
            });
        }
    }
    out
}

fn parse(text: &str) -> Result<crate::playbook::Playbook, String> {
    crate::playbook::parse(Path::new("/tmp/init/playbook.yaml"), text)
        .map_err(|errors| format!("{errors}\n{text}"))
}

#[test]
fn output_validates_for_every_combination() {
    for Rendered {
        issuer,
        targets,
        text,
    } in render_all(false)
    {
        let book = parse(&text).unwrap_or_else(|errors| panic!("{issuer} {targets:?}: {errors}"));
        assert_eq!(book.issuer.kind_name(), issuer);
        assert_eq!(book.targets.len(), targets.len());
    }
}

#[test]
fn optional_fields_validate_when_uncommented() {
    for Rendered {
        issuer,
        targets,
        text,
    } in render_all(true)
    {
        let book = parse(&text).unwrap_or_else(|errors| panic!("{issuer} {targets:?}: {errors}"));
        assert!(book.max_age.is_some(), "{text}");
        assert!(book.watch.is_some(), "{text}");
        assert_eq!(book.verify.is_some(), issuer != "aws_iam", "{text}");
    }
}

#[test]
fn repeated_target_kind_gets_unique_names() {
    let options = Options {
        issuer: "random",
        targets: &["dotenv", "dotenv", "file", "file"],
        name: "app-key",
    };
    let book = parse(&render(&options).unwrap()).unwrap();
    let names: Vec<&str> = book.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["app-env", "app-env-2", "key-file", "key-file-2"]);
}

#[test]
fn placeholders_are_warnings_with_lines() {
    let options = Options {
        issuer: "aws_iam",
        targets: &["aws_secret"],
        name: "app-key",
    };
    let text = render(&options).unwrap();
    let book = parse(&text).unwrap();
    let placeholders: Vec<(&str, usize)> = book
        .warnings
        .iter()
        .filter(|w| w.message.contains(PLACEHOLDER))
        .map(|w| (w.path.as_str(), w.line))
        .collect();
    let line_of = |needle: &str| 1 + text.lines().position(|l| l.contains(needle)).unwrap();
    assert_eq!(
        placeholders,
        [
            ("issuer.user", line_of("user: change-me")),
            ("targets[0].secret_id", line_of("secret_id: change-me")),
        ]
    );
    assert!(
        book.warnings
            .iter()
            .all(|w| w.severity == Severity::Warning)
    );
}

#[test]
fn every_field_line_has_a_comment() {
    for Rendered {
        issuer,
        targets,
        text,
    } in render_all(true)
    {
        let mut previous = "";
        for line in text.lines() {
            let after_comment = previous.trim_start().starts_with('#');
            previous = line;
            let code = line.trim_start().trim_start_matches("- ");
            // Entries of free-form mappings (set, pick, body, headers) and
            // continuation lines of a block scalar are not fields.
            let is_entry = code
                .starts_with(|c: char| c.is_ascii_uppercase() || c == '/' || c == '(')
                || [
                    "id:",
                    "secret:",
                    "access_key_id:",
                    "secret_access_key:",
                    "api_key:",
                    "scopes:",
                    "keywheel_run:",
                    "metadata:",
                    "Authorization:",
                ]
                .iter()
                .any(|entry| code.starts_with(entry));
            if code.is_empty() || code.starts_with('#') || is_entry || !code.contains(':') {
                continue;
            }
            // A comment too long for the line is on the line above.
            assert!(
                line.contains("# ") || after_comment,
                "no comment on {line:?} in {issuer} {targets:?}"
            );
        }
    }
}

#[test]
fn ambiguous_name_is_quoted() {
    let options = Options {
        issuer: "random",
        targets: &["dotenv"],
        name: "0600",
    };
    let text = render(&options).unwrap();
    assert!(text.contains("name: \"0600\""), "{text}");
    assert_eq!(parse(&text).unwrap().name, "0600");
}

#[test]
fn invalid_options_are_rejected() {
    let options = |issuer, targets, name| Options {
        issuer,
        targets,
        name,
    };
    let err = render(&options("vault", &["dotenv"], "a")).unwrap_err();
    assert!(
        err.to_string().contains("random, http, command, aws_iam"),
        "{err}"
    );
    let err = render(&options("random", &["s3"], "a")).unwrap_err();
    assert!(
        err.to_string().contains("unknown target kind \"s3\""),
        "{err}"
    );
    let err = render(&options("random", &[], "a")).unwrap_err();
    assert!(matches!(err, InitError::NoTarget));
    let err = render(&options("random", &["file"], "has space")).unwrap_err();
    assert!(err.to_string().contains("invalid name"), "{err}");
}

#[test]
fn default_name_comes_from_output_file() {
    assert_eq!(
        default_name(Some(Path::new("x/billing-key.yaml"))),
        "billing-key"
    );
    assert_eq!(default_name(Some(Path::new("x/.yaml"))), PLACEHOLDER);
    assert_eq!(default_name(None), PLACEHOLDER);
}

#[test]
fn write_keeps_existing_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    write(&path, "first\n", false).unwrap();
    let mode = crate::fsutil::mode_of(&path).unwrap();
    assert_eq!(mode, PLAYBOOK_MODE);

    let err = write(&path, "second\n", false).unwrap_err();
    assert!(matches!(err, InitError::Exists(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");

    write(&path, "third\n", true).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "third\n");
    assert_eq!(crate::fsutil::mode_of(&path).unwrap(), PLAYBOOK_MODE);
}
