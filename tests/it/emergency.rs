//! `run --emergency` for a leaked key: no overlap window, the old key is
//! revoked as soon as the new one is pushed (or before the push), nothing
//! asks, and the leaked key is never put back.

use crate::http_issuer::{
    Book, app_env_key, env_for, journal_events, playbook, seq_of, verify_section,
};
use crate::support::key_service::KeyService;
use crate::support::proxy::{Fault, FaultProxy, Rule};
use crate::support::unique;
use crate::support::vault::Vault;
use crate::support::{EXIT_ATTENTION, EXIT_OK, EXIT_USAGE};

#[test]
fn emergency_revokes_after_push_without_asking() {
    let service = KeyService::start();
    let env = env_for(&service);
    let text = playbook(&Book {
        verify: &verify_section("10s"),
        ..Book::default()
    });
    let path = env.playbook("gw.yaml", &text);

    // No terminal and no --yes: a scheduled run would stop before retire.
    let run = env.keywheel(&["run", "--emergency", "--json", path.to_str().unwrap()]);
    run.assert_code(EXIT_OK);
    let report = run.json();
    assert_eq!(report["mode"], "emergency");
    assert_eq!(report["status"], "completed");

    assert!(
        service.key(&service.bootstrap_id).is_none(),
        "leaked key still exists"
    );
    assert_eq!(service.call_models(&service.bootstrap_secret), 401);
    assert_eq!(service.call_models(&app_env_key(&env)), 200);

    let events = journal_events(&env, &env.last_run_id());
    let pushed = seq_of(&events, "done", Some("push:app-env")).unwrap();
    let revoked = seq_of(&events, "intent", Some("revoke")).unwrap();
    let retired = seq_of(&events, "done", Some("retire")).unwrap();
    assert!(pushed < revoked, "revoked before the push");
    assert!(revoked < retired);
    assert!(seq_of(&events, "intent", Some("watch:overlap")).is_none());
    assert!(
        run.stderr.contains("without asking (emergency)"),
        "{}",
        run.stderr
    );
}

#[test]
fn abused_leak_is_revoked_before_push() {
    let service = KeyService::start();
    let env = env_for(&service);
    let text = playbook(&Book::default()) + "emergency:\n  revoke: before_push\n";
    let path = env.playbook("gw.yaml", &text);

    env.keywheel(&["run", "--emergency", path.to_str().unwrap()])
        .assert_code(EXIT_OK);

    let events = journal_events(&env, &env.last_run_id());
    let revoked = seq_of(&events, "done", Some("revoke")).unwrap();
    let pushed = seq_of(&events, "intent", Some("push:app-env")).unwrap();
    let verified = seq_of(&events, "done", Some("verify")).unwrap();
    assert!(
        verified < revoked,
        "revoked before the new key was verified"
    );
    assert!(
        revoked < pushed,
        "the old key must be disabled before the push"
    );
    assert!(service.key(&service.bootstrap_id).is_none());
    assert_eq!(service.call_models(&app_env_key(&env)), 200);
}

#[test]
fn failed_push_holds_and_never_restores() {
    let service = KeyService::start();
    let vault = Vault::from_env();
    let path_in_vault = unique("leak");
    vault.put(
        "secret",
        &path_in_vault,
        &[("api_key", &service.bootstrap_secret)],
    );
    let proxy = FaultProxy::start(&vault.addr);
    proxy.inject(Rule::new(
        Some("POST"),
        &format!("/data/{path_in_vault}$"),
        1,
        Fault::Status {
            status: 403,
            retry_after: None,
            body: "{\"errors\":[\"permission denied\"]}".into(),
        },
    ));
    let mut env = env_for(&service);
    env.env("VAULT_ADDR", &proxy.url);
    env.env("VAULT_TOKEN", &vault.token);
    env.secret(&vault.token);
    let extra = format!(
        "  - name: vault-app\n    type: vault\n    mount: secret\n    path: {path_in_vault}\n    set:\n      api_key: secret\n"
    );
    let text = playbook(&Book {
        extra_targets: &extra,
        ..Book::default()
    }) + "emergency:\n  revoke: before_push\n";
    let path = env.playbook("gw.yaml", &text);

    let run = env.keywheel(&["run", "--emergency", path.to_str().unwrap()]);
    run.assert_code(EXIT_ATTENTION);
    assert!(
        run.stderr.contains("does not put the leaked key back"),
        "{}",
        run.stderr
    );
    let new_key = app_env_key(&env);
    assert_ne!(
        new_key, service.bootstrap_secret,
        "app-env was restored to the leaked key"
    );
    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "disabled"
    );
    assert_eq!(
        vault.get("secret", &path_in_vault).1["api_key"],
        service.bootstrap_secret
    );

    let run_id = env.last_run_id();
    let rollback = env.keywheel(&["rollback", &run_id]);
    rollback.assert_code(EXIT_USAGE);
    assert!(
        rollback.stderr.contains("would put the leaked key back"),
        "{}",
        rollback.stderr
    );
    assert_eq!(app_env_key(&env), new_key);
    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "disabled"
    );

    env.keywheel(&["resume", &run_id]).assert_code(EXIT_OK);
    assert!(service.key(&service.bootstrap_id).is_none());
    assert_eq!(vault.get("secret", &path_in_vault).1["api_key"], new_key);
    let report = env.keywheel(&["report", &run_id]);
    assert!(
        report.stdout.contains("| mode | emergency |"),
        "{}",
        report.stdout
    );
}

#[test]
fn emergency_and_if_due_conflict() {
    let service = KeyService::start();
    let env = env_for(&service);
    let path = env.playbook("gw.yaml", &playbook(&Book::default()));
    let run = env.keywheel(&["run", "--emergency", "--if-due", path.to_str().unwrap()]);
    run.assert_code(EXIT_USAGE);
}

#[test]
fn emergency_plan_deletes_before_watching() {
    let service = KeyService::start();
    let env = env_for(&service);
    let path = env.playbook("gw.yaml", &playbook(&Book::default()));
    let plan = env.keywheel(&["plan", "--emergency", "--json", path.to_str().unwrap()]);
    plan.assert_code(EXIT_OK);
    let steps: Vec<String> = plan.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}: {}",
                s["step"].as_str().unwrap(),
                s["description"].as_str().unwrap()
            )
        })
        .collect();
    let revoke = steps.iter().position(|s| s.starts_with("revoke:")).unwrap();
    let retire = steps.iter().position(|s| s.starts_with("retire:")).unwrap();
    assert_eq!(retire, revoke + 1, "{steps:?}");
    assert!(!steps[revoke].contains("re-enabled"), "{}", steps[revoke]);
    assert!(
        steps[retire].contains("without asking"),
        "{}",
        steps[retire]
    );
    assert!(
        !steps.iter().any(|s| s.starts_with("watch:overlap")),
        "{steps:?}"
    );
}
