//! The aws_secret target and the aws_iam issuer against moto, with the fault
//! proxy in between so that tests can check what keywheel sent and inject
//! AWS errors. moto is more lenient than AWS (it accepts a reused
//! ClientRequestToken with another value, and lets AWSPENDING sit on two
//! versions), so the tests check the requests keywheel sends and what it
//! journals, not only what moto ends up holding.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::aws::{
    self, AccessKey, Moto, calls, json_body, json_error, json_rule, query_error, query_rule,
};
use crate::support::kube::{self, Cluster};
use crate::support::proxy::{Fault, FaultProxy, Rule, Seen};
use crate::support::vault::Vault;
use crate::support::{
    EXIT_ATTENTION, EXIT_FAILED, EXIT_OK, EXIT_USAGE, Run, TestEnv, dotenv_value, unique,
};

/// An IAM user with one active key, a secret holding that key as JSON with
/// one more field, and a .env file holding it too.
pub struct Fixture {
    pub env: TestEnv,
    pub moto: Moto,
    pub proxy: FaultProxy,
    pub user: String,
    pub secret: String,
    pub arn: String,
    pub old: AccessKey,
    pub old_version: String,
    pub original_env: String,
}

pub fn fixture() -> Fixture {
    let moto = Moto::from_env();
    let user = unique("kw-user");
    moto.create_user(&user);
    let old = moto.create_key(&user);

    let secret = unique("kw/app");
    let value = json!({
        "AWS_ACCESS_KEY_ID": old.id,
        "AWS_SECRET_ACCESS_KEY": old.secret,
        "region": "eu-west-1",
    });
    let arn = moto.create_secret(&secret, Some(&value.to_string()));
    let old_version = moto
        .holder(&secret, "AWSCURRENT")
        .expect("a current version");

    let proxy = FaultProxy::start(&moto.endpoint);
    let mut env = TestEnv::new();
    aws::configure(&mut env, &proxy.url);
    env.secret(&old.secret);
    let original_env = format!(
        "# app\nAWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nTAIL=1\n",
        old.id, old.secret
    );
    std::fs::write(env.path("app.env"), &original_env).unwrap();
    Fixture {
        env,
        moto,
        proxy,
        user,
        secret,
        arn,
        old,
        old_version,
        original_env,
    }
}

impl Fixture {
    /// Writes a playbook that rotates the IAM key into the secret and the
    /// .env file, followed by `extra` (more targets or a policy).
    pub fn playbook(&self, extra: &str) -> PathBuf {
        let text = format!(
            "version: 1
name: {name}
issuer:
  type: aws_iam
  user: {user}
  propagation_timeout: 20s
targets:
  - name: aws-secret
    type: aws_secret
    secret_id: {secret}
    set:
      AWS_ACCESS_KEY_ID: access_key_id
      AWS_SECRET_ACCESS_KEY: secret_access_key
  - name: app-env
    type: dotenv
    path: app.env
    set:
      AWS_ACCESS_KEY_ID: access_key_id
      AWS_SECRET_ACCESS_KEY: secret_access_key
{extra}",
            name = unique("aws"),
            user = self.user,
            secret = self.secret,
        );
        self.env.playbook("aws.yaml", &text)
    }

    /// Runs `keywheel run PLAYBOOK` with `flags`.
    pub fn run(&self, playbook: &std::path::Path, flags: &[&str]) -> Run {
        let mut args = vec!["run", playbook.to_str().unwrap()];
        args.extend_from_slice(flags);
        self.env.keywheel(&args)
    }

    /// The key pair in the AWSCURRENT version.
    pub fn secret_pair(&self) -> (String, String) {
        let value = self.moto.current_json(&self.secret);
        let pair = (
            value["AWS_ACCESS_KEY_ID"].as_str().unwrap().to_string(),
            value["AWS_SECRET_ACCESS_KEY"].as_str().unwrap().to_string(),
        );
        self.env.secret(&pair.1);
        pair
    }

    pub fn env_text(&self) -> String {
        std::fs::read_to_string(self.env.path("app.env")).unwrap()
    }

    /// Checks that every target contains one new key, the only key the user
    /// has, and that other fields and bytes were kept. Returns it.
    pub fn assert_rotated(&self) -> AccessKey {
        let (id, secret) = self.secret_pair();
        assert_ne!(id, self.old.id, "the secret still holds the old key");
        let text = self.env_text();
        assert_eq!(dotenv_value(&text, "AWS_ACCESS_KEY_ID").unwrap(), id);
        assert_eq!(
            dotenv_value(&text, "AWS_SECRET_ACCESS_KEY").unwrap(),
            secret
        );
        assert_eq!(
            text,
            self.original_env
                .replace(&self.old.id, &id)
                .replace(&self.old.secret, &secret),
            "other bytes of the .env file changed"
        );
        assert_eq!(
            self.moto.current_json(&self.secret)["region"],
            "eu-west-1",
            "another field of the secret was lost"
        );
        assert_eq!(
            self.moto.keys(&self.user),
            [(id.clone(), true)],
            "the user must have exactly the new key, active"
        );
        AccessKey { id, secret }
    }

    /// Checks that nothing changed: the old key is the only key and active,
    /// AWSCURRENT is the original version, the .env file is as it was.
    pub fn assert_original(&self) {
        assert_eq!(self.moto.keys(&self.user), [(self.old.id.clone(), true)]);
        assert_eq!(
            self.moto.holder(&self.secret, "AWSCURRENT").as_deref(),
            Some(self.old_version.as_str())
        );
        assert_eq!(self.secret_pair().0, self.old.id);
        assert_eq!(self.env_text(), self.original_env);
    }

    pub fn run_id(&self) -> Option<String> {
        let history = self.env.keywheel(&["history", "--json"]).json();
        history["runs"][0]["run_id"].as_str().map(str::to_string)
    }

    /// Reads the journal of `run_id` as JSON records.
    pub fn journal(&self, run_id: &str) -> Vec<Value> {
        std::fs::read_to_string(self.env.journal(run_id))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(&line[9..]).unwrap())
            .collect()
    }

    /// Returns the ClientRequestToken that preflight journaled for `target`.
    pub fn journaled_token(&self, run_id: &str, target: &str) -> String {
        let journal = self.journal(run_id);
        let preflight = journal
            .iter()
            .find(|r| r["event"] == "preflight")
            .expect("a preflight record");
        let record = preflight["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == target)
            .expect("the target's record");
        record["state"]["token"].as_str().unwrap().to_string()
    }
}

fn position(seen: &[Seen], request: &Seen) -> usize {
    seen.iter()
        .position(|s| s.at == request.at && s.body == request.body)
        .unwrap()
}

fn form_field(seen: &Seen, name: &str) -> Option<String> {
    String::from_utf8_lossy(&seen.body)
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// Returns the UpdateSecretVersionStage requests for `stage`.
fn stage_moves(proxy: &FaultProxy, stage: &str) -> Vec<Value> {
    calls(proxy, "UpdateSecretVersionStage")
        .iter()
        .map(json_body)
        .filter(|body| body["VersionStage"] == stage)
        .collect()
}

#[test]
fn iam_key_rotates_into_secret_and_dotenv() {
    let f = fixture();
    let playbook = f.playbook("");

    f.run(&playbook, &["--yes"]).assert_code(EXIT_OK);

    let new = f.assert_rotated();
    let run_id = f.run_id().unwrap();
    let token = f.journaled_token(&run_id, "aws-secret");
    let stages = f.moto.stages(&f.secret);
    assert_eq!(stages[&token], ["AWSCURRENT".to_string()].into());
    assert_eq!(stages[&f.old_version], ["AWSPREVIOUS".to_string()].into());
    assert_eq!(f.moto.holder(&f.secret, "AWSPENDING"), None);

    let puts = calls(&f.proxy, "PutSecretValue");
    assert_eq!(puts.len(), 1);
    let put = json_body(&puts[0]);
    assert_eq!(put["ClientRequestToken"], token.as_str());
    assert_eq!(put["VersionStages"], json!(["AWSPENDING"]));

    let promotions = stage_moves(&f.proxy, "AWSCURRENT");
    assert_eq!(promotions.len(), 1);
    assert_eq!(promotions[0]["MoveToVersionId"], token.as_str());
    assert_eq!(
        promotions[0]["RemoveFromVersionId"],
        f.old_version.as_str(),
        "RemoveFromVersionId must name the version that held AWSCURRENT"
    );
    for read in calls(&f.proxy, "GetSecretValue") {
        let body = json_body(&read);
        assert!(
            body.get("VersionId").is_some() || body.get("VersionStage").is_some(),
            "a read without a version or stage: {body}"
        );
    }

    let seen = f.proxy.seen();
    let verify = calls(&f.proxy, "GetCallerIdentity");
    let disable = calls(&f.proxy, "UpdateAccessKey");
    let delete = calls(&f.proxy, "DeleteAccessKey");
    assert_eq!(verify.len(), 1);
    assert_eq!(disable.len(), 1);
    assert_eq!(delete.len(), 1);
    assert_eq!(
        form_field(&disable[0], "Status").as_deref(),
        Some("Inactive")
    );
    assert_eq!(
        form_field(&disable[0], "AccessKeyId").as_deref(),
        Some(f.old.id.as_str())
    );
    assert_eq!(
        form_field(&delete[0], "AccessKeyId").as_deref(),
        Some(f.old.id.as_str())
    );
    assert!(position(&seen, &verify[0]) < position(&seen, &puts[0]));
    assert!(position(&seen, &puts[0]) < position(&seen, &disable[0]));
    assert!(position(&seen, &disable[0]) < position(&seen, &delete[0]));

    let report = f.env.keywheel(&["status", &run_id, "--json"]).json();
    assert_eq!(report["runs"][0]["new_key_id"], new.id.as_str());
    assert_eq!(report["runs"][0]["old_key_id"], f.old.id.as_str());
}

#[test]
fn throttled_put_retries_same_request() {
    let f = fixture();
    f.proxy.inject(json_rule(
        "PutSecretValue",
        2,
        json_error("ThrottlingException", "Rate exceeded"),
    ));
    let playbook = f.playbook("");

    f.run(&playbook, &["--yes"]).assert_code(EXIT_OK);

    f.assert_rotated();
    let puts = calls(&f.proxy, "PutSecretValue");
    assert_eq!(puts.len(), 3, "two throttled attempts and one that passed");
    assert!(puts[0].fault.is_some(), "the first put was not throttled");
    assert!(puts[1].fault.is_some(), "the second put was not throttled");
    assert_eq!(puts[0].body, puts[1].body, "a retry changed the request");
    assert_eq!(puts[1].body, puts[2].body, "a retry changed the request");
    let first_gap = puts[1].at.duration_since(puts[0].at);
    assert!(first_gap >= Duration::from_millis(100), "{first_gap:?}");

    let run_id = f.run_id().unwrap();
    let push_failures: Vec<Value> = f
        .journal(&run_id)
        .into_iter()
        .filter(|r| r["event"] == "failed")
        .collect();
    assert!(
        push_failures.is_empty(),
        "throttling must not fail a step: {push_failures:?}"
    );
}

#[test]
fn limit_exceeded_is_terminal_and_rolls_back() {
    let f = fixture();
    f.proxy.inject(json_rule(
        "PutSecretValue",
        5,
        json_error(
            "LimitExceededException",
            "The request failed because it would exceed one of the Secrets Manager quotas.",
        ),
    ));
    let playbook = f.playbook("policy:\n  concurrency: 1\n");

    let run = f.run(&playbook, &["--yes", "--json"]);

    run.assert_code(EXIT_FAILED);
    assert_eq!(run.json()["status"], "rolled_back");
    assert_eq!(
        calls(&f.proxy, "PutSecretValue").len(),
        1,
        "a limit error must not be retried"
    );
    assert!(
        run.stderr.contains("LimitExceededException"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("AWS limit is reached"),
        "{}",
        run.stderr
    );
    f.assert_original();
}

#[test]
fn promotion_without_awscurrent_names_no_version() {
    let moto = Moto::from_env();
    let secret = unique("kw/plain");
    moto.create_secret(&secret, Some("sk_live_before_0000000000"));
    let first = moto.holder(&secret, "AWSCURRENT").unwrap();
    moto.remove_stage(&secret, "AWSCURRENT", &first);
    assert_eq!(moto.holder(&secret, "AWSCURRENT"), None);
    let proxy = FaultProxy::start(&moto.endpoint);
    // moto 5.2 responds to a move of AWSCURRENT without RemoveFromVersionId
    // with HTTP 500 when no version carries it, so the proxy responds as
    // AWS does. moto then never moves the label, the read back fails and the
    // run rolls back: the test checks the request keywheel sent.
    proxy.inject(
        json_rule(
            "UpdateSecretVersionStage",
            1,
            Fault::Status {
                status: 200,
                retry_after: None,
                body: json!({"ARN": "arn", "Name": secret}).to_string(),
            },
        )
        .with_body("\"VersionStage\":\"AWSCURRENT\""),
    );
    let mut env = TestEnv::new();
    aws::configure(&mut env, &proxy.url);
    let playbook = env.playbook(
        "p.yaml",
        &format!(
            "version: 1
name: {}
issuer:
  type: random
  prefix: sk_live_
targets:
  - name: aws-plain
    type: aws_secret
    secret_id: {secret}
    field: secret
",
            unique("plain")
        ),
    );

    let run = env.keywheel(&["run", playbook.to_str().unwrap(), "--json"]);

    run.assert_code(EXIT_FAILED);
    assert_eq!(run.json()["status"], "rolled_back");
    let promotions = stage_moves(&proxy, "AWSCURRENT");
    assert_eq!(promotions.len(), 1, "{promotions:?}");
    let put = json_body(&calls(&proxy, "PutSecretValue")[0]);
    env.secret(put["SecretString"].as_str().unwrap());
    assert_eq!(promotions[0]["MoveToVersionId"], put["ClientRequestToken"]);
    assert!(
        promotions[0].get("RemoveFromVersionId").is_none(),
        "no version held AWSCURRENT, so none may be named: {}",
        promotions[0]
    );
    assert_eq!(moto.holder(&secret, "AWSCURRENT"), None);
}

#[test]
fn foreign_pending_version_stops_the_run() {
    let f = fixture();
    let foreign = f
        .moto
        .put_version(&f.secret, "{\"other\":\"rotation\"}", &["AWSPENDING"]);
    let before = f.moto.stages(&f.secret);
    let playbook = f.playbook("");

    let run = f.run(&playbook, &["--yes"]);

    run.assert_code(EXIT_FAILED);
    assert!(run.stderr.contains(&foreign), "{}", run.stderr);
    assert!(run.stderr.contains("--discard-pending"), "{}", run.stderr);
    assert!(run.stderr.contains("--adopt-pending"), "{}", run.stderr);
    assert!(calls(&f.proxy, "CreateAccessKey").is_empty());
    assert_eq!(f.moto.stages(&f.secret), before);
    f.assert_original();
}

#[test]
fn discard_pending_drops_the_foreign_label() {
    let f = fixture();
    let foreign = f
        .moto
        .put_version(&f.secret, "{\"other\":\"rotation\"}", &["AWSPENDING"]);
    let playbook = f.playbook("");

    f.run(&playbook, &["--yes", "--discard-pending"])
        .assert_code(EXIT_OK);

    f.assert_rotated();
    assert!(!f.moto.stages(&f.secret)[&foreign].contains("AWSPENDING"));
    let removals = stage_moves(&f.proxy, "AWSPENDING");
    assert_eq!(removals[0]["RemoveFromVersionId"], foreign.as_str());
    assert!(removals[0].get("MoveToVersionId").is_none());
}

#[test]
fn rollback_restores_discarded_pending_label() {
    let f = fixture();
    let foreign = f
        .moto
        .put_version(&f.secret, "{\"other\":\"rotation\"}", &["AWSPENDING"]);
    let playbook = f.playbook("policy:\n  concurrency: 1\n");
    // Record 9 confirms the push of the secret, the first target.
    f.env
        .keywheel_crashing(
            "after:9",
            &["run", playbook.to_str().unwrap(), "--discard-pending"],
        )
        .assert_killed();
    let run_id = f.run_id().unwrap();
    assert_ne!(f.secret_pair().0, f.old.id, "the push did not happen");

    f.env.keywheel(&["rollback", &run_id]).assert_code(EXIT_OK);

    f.assert_original();
    assert_eq!(
        f.moto.holder(&f.secret, "AWSPENDING").as_deref(),
        Some(foreign.as_str())
    );
}

#[test]
fn adopt_pending_keeps_pending_fields() {
    let f = fixture();
    let pending = json!({
        "AWS_ACCESS_KEY_ID": f.old.id,
        "AWS_SECRET_ACCESS_KEY": f.old.secret,
        "region": "eu-west-1",
        "endpoint": "https://added.by.other.rotation",
    });
    f.moto
        .put_version(&f.secret, &pending.to_string(), &["AWSPENDING"]);
    let playbook = f.playbook("");

    f.run(&playbook, &["--yes", "--adopt-pending"])
        .assert_code(EXIT_OK);

    f.assert_rotated();
    assert_eq!(
        f.moto.current_json(&f.secret)["endpoint"],
        "https://added.by.other.rotation"
    );
}

#[test]
fn pending_on_current_is_finished_rotation() {
    let f = fixture();
    let value = f.moto.value_at(&f.secret, "AWSCURRENT");
    let finished = f
        .moto
        .put_version(&f.secret, &value, &["AWSCURRENT", "AWSPENDING"]);
    assert_eq!(
        f.moto.holder(&f.secret, "AWSPENDING").as_deref(),
        Some(finished.as_str())
    );
    let playbook = f.playbook("");

    f.run(&playbook, &["--yes"]).assert_code(EXIT_OK);

    let promotions = stage_moves(&f.proxy, "AWSCURRENT");
    assert_eq!(promotions[0]["RemoveFromVersionId"], finished.as_str());
    assert_eq!(f.moto.holder(&f.secret, "AWSPENDING"), None);
    let (id, _) = f.secret_pair();
    assert_ne!(id, f.old.id);
}

#[test]
fn deleted_secret_stops_with_its_arn() {
    let f = fixture();
    f.moto.schedule_deletion(&f.secret);
    let playbook = f.playbook("");

    let run = f.run(&playbook, &["--yes"]);

    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr.contains("scheduled for deletion"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&f.arn), "{}", run.stderr);
    assert!(run.stderr.contains("--restore"), "{}", run.stderr);
    assert!(calls(&f.proxy, "CreateAccessKey").is_empty());
    assert!(f.moto.is_scheduled_for_deletion(&f.secret));
}

#[test]
fn restore_flag_rotates_deleted_secret() {
    let f = fixture();
    f.moto.schedule_deletion(&f.secret);
    let playbook = f.playbook("");

    f.run(&playbook, &["--yes", "--restore"])
        .assert_code(EXIT_OK);

    assert!(!f.moto.is_scheduled_for_deletion(&f.secret));
    assert_eq!(calls(&f.proxy, "RestoreSecret").len(), 1);
    f.assert_rotated();
}

/// Starts `keywheel run` and kills it with SIGKILL once `ready` holds.
fn kill_when(f: &Fixture, args: &[&str], ready: impl Fn() -> bool) -> Run {
    let mut command = f.env.command(args);
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "the awaited request never came");
        assert!(
            child.try_wait().unwrap().is_none(),
            "keywheel exited before the awaited request"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    f.env.record_output(output)
}

#[test]
fn resume_after_put_resends_same_request() {
    let f = fixture();
    // Holds the promotion back, so the process dies right after the put.
    f.proxy.inject(json_rule(
        "UpdateSecretVersionStage",
        1,
        Fault::Delay(Duration::from_secs(120)),
    ));
    let playbook = f.playbook("");
    let crashed = kill_when(&f, &["run", playbook.to_str().unwrap(), "--yes"], || {
        !calls(&f.proxy, "UpdateSecretVersionStage").is_empty()
    });
    crashed.assert_killed();
    let run_id = f.run_id().unwrap();
    let token = f.journaled_token(&run_id, "aws-secret");

    f.env
        .keywheel(&["resume", &run_id, "--yes"])
        .assert_code(EXIT_OK);

    let puts = calls(&f.proxy, "PutSecretValue");
    assert_eq!(puts.len(), 2, "one put before the crash, one on resume");
    let (first, second) = (json_body(&puts[0]), json_body(&puts[1]));
    assert_eq!(first["ClientRequestToken"], token.as_str());
    assert_eq!(second["ClientRequestToken"], token.as_str());
    assert_eq!(
        first["SecretString"], second["SecretString"],
        "resume must send the same value with the same token"
    );
    f.assert_rotated();

    // The token was journaled before the push was announced.
    let journal = f.journal(&run_id);
    let preflight = journal.iter().position(|r| r["event"] == "preflight");
    let push = journal
        .iter()
        .position(|r| r["event"] == "intent" && r["step"] == "push:aws-secret");
    assert!(preflight.unwrap() < push.unwrap());
}

#[test]
fn two_active_keys_stop_the_run() {
    let f = fixture();
    let second = f.moto.create_key(&f.user);
    f.env.secret(&second.secret);
    let playbook = f.playbook("");

    let run = f.run(&playbook, &["--yes", "--delete-inactive-key"]);

    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr.contains("2 active access keys"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&second.id), "{}", run.stderr);
    assert!(calls(&f.proxy, "CreateAccessKey").is_empty());
    assert!(calls(&f.proxy, "DeleteAccessKey").is_empty());
    assert_eq!(f.moto.keys(&f.user).len(), 2);
}

#[test]
fn foreign_inactive_key_leaves_no_free_slot() {
    let f = fixture();
    let inactive = f.moto.create_key(&f.user);
    f.env.secret(&inactive.secret);
    f.moto.set_key_active(&f.user, &inactive.id, false);
    let playbook = f.playbook("");

    let plan = f.env.keywheel(&["plan", playbook.to_str().unwrap()]);
    assert!(
        plan.stdout.contains("no access key slot is free"),
        "{}",
        plan.stdout
    );
    let run = f.run(&playbook, &["--yes"]);

    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr.contains("no access key slot is free"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&inactive.id), "{}", run.stderr);
    assert!(
        run.stderr.contains("--delete-inactive-key"),
        "{}",
        run.stderr
    );
    assert!(calls(&f.proxy, "DeleteAccessKey").is_empty());
    assert_eq!(f.moto.key_active(&f.user, &inactive.id), Some(false));
}

#[test]
fn delete_inactive_key_flag_frees_a_slot() {
    let f = fixture();
    let inactive = f.moto.create_key(&f.user);
    f.env.secret(&inactive.secret);
    f.moto.set_key_active(&f.user, &inactive.id, false);
    let playbook = f.playbook("");

    f.run(&playbook, &["--yes", "--delete-inactive-key"])
        .assert_code(EXIT_OK);

    f.assert_rotated();
    let seen = f.proxy.seen();
    let deletes = calls(&f.proxy, "DeleteAccessKey");
    let create = &calls(&f.proxy, "CreateAccessKey")[0];
    assert_eq!(
        form_field(&deletes[0], "AccessKeyId").as_deref(),
        Some(inactive.id.as_str())
    );
    assert!(position(&seen, &deletes[0]) < position(&seen, create));
}

/// Appends a `finished` record to the journal of `run_id`.
fn finish_run_by_hand(env: &TestEnv, run_id: &str) {
    use keywheel::engine::record::{Event, Outcome, Record};
    use keywheel::store::{RawRecord, Store};

    let journal = std::fs::read_to_string(env.journal(run_id)).unwrap();
    let seq = journal.lines().count() as u64 + 1;
    let record = Record {
        seq,
        at: "2026-12-04T00:00:00.000Z".into(),
        event: Event::Finished {
            outcome: Outcome::Completed,
            summary: "ended by the test between revoke and retire".into(),
        },
    };
    let raw = RawRecord {
        seq,
        json: serde_json::to_string(&record).unwrap(),
    };
    let store = keywheel::store::local::LocalStore::open(&env.state_dir).unwrap();
    let run = run_id.parse().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(store.append(&run, &raw))
        .unwrap();
}

#[test]
fn key_disabled_by_earlier_run_is_deleted() {
    let f = fixture();
    let playbook = f.playbook("");
    // Without --yes and without a terminal, the run stops before retire:
    // the old key is disabled and the new one is in every target.
    let held = f.run(&playbook, &["--json"]);
    held.assert_code(EXIT_ATTENTION);
    let first_run = f.run_id().unwrap();
    let second_key = f.secret_pair().0;
    assert_eq!(f.moto.key_active(&f.user, &f.old.id), Some(false));
    // No command ends a run between revoke and retire; the test writes the
    // record that would, leaving the old key disabled by keywheel.
    finish_run_by_hand(&f.env, &first_run);

    let plan = f.env.keywheel(&["plan", playbook.to_str().unwrap()]);
    assert!(
        plan.stdout.contains("an earlier keywheel run disabled it"),
        "{}",
        plan.stdout
    );
    f.run(&playbook, &["--yes"]).assert_code(EXIT_OK);

    assert_eq!(f.moto.key_active(&f.user, &f.old.id), None);
    assert_eq!(f.moto.key_active(&f.user, &second_key), None);
    let (third_key, _) = f.secret_pair();
    assert_eq!(f.moto.keys(&f.user), [(third_key, true)]);
}

#[test]
fn verify_backs_off_while_key_propagates() {
    let f = fixture();
    f.proxy.inject(query_rule(
        "GetCallerIdentity",
        2,
        query_error(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ),
    ));
    let playbook = f.playbook("");

    f.run(&playbook, &["--yes"]).assert_code(EXIT_OK);

    let checks = calls(&f.proxy, "GetCallerIdentity");
    assert_eq!(checks.len(), 3, "two rejected checks, then one that passed");
    let first_put = &calls(&f.proxy, "PutSecretValue")[0];
    assert!(
        checks[2].at <= first_put.at,
        "a target was written before the key was verified"
    );
    f.assert_rotated();
}

#[test]
fn verification_timeout_deletes_the_new_key() {
    let f = fixture();
    f.proxy.inject(query_rule(
        "GetCallerIdentity",
        1000,
        query_error(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ),
    ));
    let playbook = f.playbook("").to_str().unwrap().to_string();
    let text = std::fs::read_to_string(&playbook)
        .unwrap()
        .replace("propagation_timeout: 20s", "propagation_timeout: 2s");
    std::fs::write(&playbook, text).unwrap();

    let run = f.env.keywheel(&["run", &playbook, "--yes", "--json"]);

    run.assert_code(EXIT_FAILED);
    assert_eq!(run.json()["status"], "rolled_back");
    assert!(
        run.stderr.contains("did not succeed within 2s"),
        "{}",
        run.stderr
    );
    assert!(calls(&f.proxy, "PutSecretValue").is_empty());
    assert!(calls(&f.proxy, "UpdateAccessKey").is_empty());
    assert_eq!(calls(&f.proxy, "DeleteAccessKey").len(), 1);
    f.assert_original();
}

#[test]
fn unjournaled_new_key_is_deleted_as_orphan() {
    for rollback in [false, true] {
        let f = fixture();
        let playbook = f.playbook("");
        // Record 4 would journal the new key: the key exists, unrecorded.
        f.env
            .keywheel_crashing("before:4", &["run", playbook.to_str().unwrap()])
            .assert_killed();
        let keys = f.moto.keys(&f.user);
        assert_eq!(keys.len(), 2, "the crashed create made no key");
        let orphan = keys
            .iter()
            .find(|(id, _)| *id != f.old.id)
            .unwrap()
            .0
            .clone();
        let run_id = f.run_id().unwrap();

        if rollback {
            f.env.keywheel(&["rollback", &run_id]).assert_code(EXIT_OK);
            f.assert_original();
        } else {
            f.env
                .keywheel(&["resume", &run_id, "--yes"])
                .assert_code(EXIT_OK);
            let new = f.assert_rotated();
            assert_ne!(new.id, orphan);
        }
        let journal = f.journal(&run_id);
        assert!(
            journal
                .iter()
                .any(|r| r["event"] == "done" && r["step"] == format!("delete-orphan:{orphan}")),
            "no deletion of {orphan} was journaled"
        );
    }
}

#[test]
fn endpoint_url_env_takes_precedence() {
    let f = fixture();
    // Every request that reaches this proxy fails.
    let dead = FaultProxy::start(&f.moto.endpoint);
    dead.inject(Rule::new(None, "", 10_000, Fault::Reset));
    let mut env = TestEnv::new();
    aws::configure(&mut env, &dead.url);
    env.env("KEYWHEEL_TEST_AWS", &f.proxy.url);
    std::fs::write(env.path("app.env"), &f.original_env).unwrap();
    let text = std::fs::read_to_string(f.playbook("")).unwrap();
    let text = text
        .replace(
            "  propagation_timeout: 20s\n",
            "  propagation_timeout: 20s\n  endpoint_url_env: KEYWHEEL_TEST_AWS\n",
        )
        .replace(
            "    type: aws_secret\n",
            "    type: aws_secret\n    endpoint_url_env: KEYWHEEL_TEST_AWS\n",
        );
    let playbook = env.playbook("aws.yaml", &text);

    env.keywheel(&["run", playbook.to_str().unwrap(), "--yes"])
        .assert_code(EXIT_OK);

    assert!(dead.seen().is_empty(), "a request went to AWS_ENDPOINT_URL");
    let (id, secret) = f.secret_pair();
    env.secret(&secret);
    assert_ne!(id, f.old.id);
}

#[test]
fn aws_playbook_mistakes_are_reported_together() {
    let env = TestEnv::new();
    let playbook = env.playbook(
        "bad.yaml",
        "version: 1
name: bad
issuer:
  type: aws_iam
  user: has space
  access_key_id: AKIAEXAMPLE
targets:
  - name: both
    type: aws_secret
    secret_id: app
    field: secret_access_key
    set:
      KEY: access_key_id
  - name: none
    type: aws_secret
    secret_id: app
    endpoint_url: http://127.0.0.1:1
  - name: misplaced
    type: aws_secret
    secret_id: app
    binary: secret_access_key
    create: true
    region: Mars
",
    );

    let run = env.keywheel(&["validate", playbook.to_str().unwrap()]);

    run.assert_code(EXIT_USAGE);
    for expected in [
        ":5:9: issuer.user: invalid IAM user name",
        ":6:18: issuer.access_key_id: `access_key_id` cannot be written in a playbook",
        "targets[0].set: `field` and `set` cannot both be set",
        "targets[1]: missing what to write",
        "targets[1].endpoint_url: `endpoint_url` cannot be written",
        "targets[2].create: `create` only applies to `set`",
        "targets[2].region: invalid AWS region",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in\n{}",
            run.stderr
        );
    }
}

/// Three targets: a Vault secret and the AWS secret are pushed, and a
/// Kubernetes Secret whose namespace forbids updates responds with 403.
struct PartialFailure {
    f: Fixture,
    vault: Vault,
    vault_proxy: FaultProxy,
    vault_path: String,
    cluster: Cluster,
    namespace: String,
    playbook: PathBuf,
}

fn partial_failure(policy: &str) -> PartialFailure {
    let mut f = fixture();
    let vault = Vault::from_env();
    let vault_path = unique("aws-pair");
    vault.put(
        "secret",
        &vault_path,
        &[
            ("access_key_id", f.old.id.as_str()),
            ("secret_access_key", f.old.secret.as_str()),
        ],
    );
    let vault_proxy = FaultProxy::start(&vault.addr);
    f.env.env("VAULT_ADDR", &vault_proxy.url);
    f.env.env("VAULT_TOKEN", &vault.token);
    f.env.secret(&vault.token);

    let cluster = Cluster::emulator();
    let namespace = cluster.namespace("kw", &[]);
    cluster.create_secret(
        &namespace,
        "aws-pair",
        &[
            ("AWS_ACCESS_KEY_ID", f.old.id.as_bytes()),
            ("AWS_SECRET_ACCESS_KEY", f.old.secret.as_bytes()),
        ],
        &[],
        &[],
    );
    cluster.control().forbid(&namespace, &["update"], "secrets");
    cluster.configure(&mut f.env);

    let extra = format!(
        "  - name: vault-app
    type: vault
    mount: secret
    path: {vault_path}
    set:
      access_key_id: access_key_id
      secret_access_key: secret_access_key
  - name: k8s-app
    type: kubernetes
    kubeconfig_env: {kubeconfig_env}
    namespace: {namespace}
    secret_name: aws-pair
    set:
      AWS_ACCESS_KEY_ID: access_key_id
      AWS_SECRET_ACCESS_KEY: secret_access_key
policy:
  concurrency: 1
{policy}",
        kubeconfig_env = kube::PLAYBOOK_KUBECONFIG_ENV,
    );
    let playbook = f.playbook(&extra);
    PartialFailure {
        f,
        vault,
        vault_proxy,
        vault_path,
        cluster,
        namespace,
        playbook,
    }
}

/// Returns each target's outcome as `status RUN --json` reports it, and
/// checks that the text of `status RUN` shows the same outcomes.
fn target_outcomes(env: &TestEnv, run_id: &str) -> Vec<(String, String)> {
    let report = env.keywheel(&["status", run_id, "--json"]).json();
    let outcomes: Vec<(String, String)> = report["runs"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let text = env
        .keywheel(&["status", run_id])
        .assert_code(EXIT_OK)
        .stdout
        .clone();
    for (name, status) in &outcomes {
        let shown = text.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.len() >= 2 && words[0] == name && words[1] == status
        });
        assert!(shown, "status does not show {name} as {status}:\n{text}");
    }
    outcomes
}

/// Returns the journal's outcome record of each push, by target name:
/// `done`, or `failed` with its class.
fn journaled_pushes(f: &Fixture, run_id: &str) -> Vec<(String, String)> {
    f.journal(run_id)
        .iter()
        .filter(|r| r["step"].as_str().is_some_and(|s| s.starts_with("push:")))
        .filter(|r| r["event"] == "done" || r["event"] == "failed")
        .map(|r| {
            let target = r["step"].as_str().unwrap()["push:".len()..].to_string();
            let outcome = match r["class"].as_str() {
                Some(class) => format!("failed ({class})"),
                None => r["event"].as_str().unwrap().to_string(),
            };
            (target, outcome)
        })
        .collect()
}

/// Checks the journal's outcome of every push of the partial failure:
/// Kubernetes denied, every other target done.
#[track_caller]
fn assert_pushes_journaled(f: &Fixture, run_id: &str) {
    let mut journaled = journaled_pushes(f, run_id);
    journaled.sort();
    assert_eq!(
        journaled,
        pairs(&[
            ("app-env", "done"),
            ("aws-secret", "done"),
            ("k8s-app", "failed (denied)"),
            ("vault-app", "done"),
        ])
    );
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn steps(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn partial_failure_restores_vault_and_aws() {
    let p = partial_failure("");
    let f = &p.f;

    let run = f.run(&p.playbook, &["--yes", "--json"]);

    run.assert_code(EXIT_FAILED);
    let report = run.json();
    assert_eq!(report["status"], "rolled_back");
    let steps = steps(&report);
    for (step, status) in [
        ("push:aws-secret", "done"),
        ("push:vault-app", "done"),
        ("push:k8s-app", "failed"),
        ("restore:aws-secret", "done"),
        ("restore:vault-app", "done"),
    ] {
        assert!(
            steps.contains(&(step.to_string(), status.to_string())),
            "{step} is not {status}: {steps:?}"
        );
    }
    assert!(
        !steps.iter().any(|(step, _)| step == "revoke"),
        "the old key was revoked: {steps:?}"
    );
    assert!(calls(&f.proxy, "UpdateAccessKey").is_empty());
    f.assert_original();
    let moves = stage_moves(&f.proxy, "AWSCURRENT");
    let back = moves.last().expect("AWSCURRENT moved back");
    assert_eq!(back["MoveToVersionId"], f.old_version.as_str());

    let run_id = report["run_id"].as_str().unwrap();
    assert_pushes_journaled(f, run_id);
    let outcomes = target_outcomes(&f.env, run_id);
    assert_eq!(
        outcomes,
        pairs(&[
            ("aws-secret", "restored"),
            ("app-env", "restored"),
            ("vault-app", "restored"),
            ("k8s-app", "restored"),
        ])
    );
    let status = f.env.keywheel(&["status", run_id, "--json"]).json();
    let pushes: Vec<(&str, &str)> = status["runs"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["push"].as_str().unwrap()))
        .collect();
    assert_eq!(
        pushes,
        [
            ("aws-secret", "pushed"),
            ("app-env", "pushed"),
            ("vault-app", "pushed"),
            ("k8s-app", "push_failed"),
        ]
    );
    let text = f.env.keywheel(&["status", run_id]).stdout;
    let k8s_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("k8s-app"))
        .unwrap();
    assert!(
        k8s_line.contains("(push failed: permission denied"),
        "{k8s_line}"
    );

    let (version, data) = p.vault.get("secret", &p.vault_path);
    assert_eq!(version, 3, "the previous value is written as a new version");
    assert_eq!(data["access_key_id"], f.old.id);
    assert_eq!(data["secret_access_key"], f.old.secret);
    let writes = p
        .vault_proxy
        .seen_matching("POST", &format!("^/v1/secret/data/{}$", p.vault_path));
    let cas: Vec<Value> = writes
        .iter()
        .map(|w| serde_json::from_slice::<Value>(&w.body).unwrap()["options"]["cas"].clone())
        .collect();
    assert_eq!(cas, [json!(1), json!(2)], "push and restore carry cas");
    let k8s = p
        .cluster
        .secret_value(&p.namespace, "aws-pair", "AWS_ACCESS_KEY_ID")
        .unwrap();
    assert_eq!(k8s, f.old.id.as_bytes());
}

#[test]
fn held_partial_failure_resumes_failed_target() {
    let p = partial_failure("  on_partial_failure: hold\n");
    let f = &p.f;

    let held = f.run(&p.playbook, &["--yes", "--json"]);

    held.assert_code(EXIT_ATTENTION);
    let report = held.json();
    assert_eq!(report["status"], "held");
    let new_id = report["new_key_id"].as_str().unwrap().to_string();
    assert_eq!(f.moto.key_active(&f.user, &f.old.id), Some(true));
    assert_eq!(f.moto.key_active(&f.user, &new_id), Some(true));
    let run_id = f.run_id().unwrap();
    assert_pushes_journaled(f, &run_id);
    let outcomes = target_outcomes(&f.env, &run_id);
    assert_eq!(
        outcomes,
        pairs(&[
            ("aws-secret", "pushed"),
            ("app-env", "pushed"),
            ("vault-app", "pushed"),
            ("k8s-app", "push_failed"),
        ])
    );
    // While held, the pushed targets hold the new key and Kubernetes the
    // old one.
    assert_eq!(f.secret_pair().0, new_id);
    assert_eq!(
        p.vault.get("secret", &p.vault_path).1["access_key_id"],
        new_id
    );
    let k8s_id = p
        .cluster
        .secret_value(&p.namespace, "aws-pair", "AWS_ACCESS_KEY_ID")
        .unwrap();
    assert_eq!(k8s_id, f.old.id.as_bytes());
    let puts_before = calls(&f.proxy, "PutSecretValue").len();
    let moves_before = calls(&f.proxy, "UpdateSecretVersionStage").len();
    let (vault_version, _) = p.vault.get("secret", &p.vault_path);

    p.cluster.control().clear_forbid();
    p.cluster.control().clear_requests();
    let resumed = f.env.keywheel(&["resume", &run_id, "--yes", "--json"]);
    resumed.assert_code(EXIT_OK);
    assert_eq!(resumed.json()["run_id"], run_id.as_str());
    let k8s_writes: Vec<String> = p
        .cluster
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        k8s_writes,
        [format!(
            "PUT /api/v1/namespaces/{}/secrets/aws-pair",
            p.namespace
        )],
        "resume wrote elsewhere in the cluster"
    );
    assert_eq!(
        calls(&f.proxy, "UpdateSecretVersionStage").len(),
        moves_before,
        "the AWS secret's stages moved again"
    );

    assert_eq!(
        calls(&f.proxy, "CreateAccessKey").len(),
        1,
        "a second key was made"
    );
    assert_eq!(
        calls(&f.proxy, "PutSecretValue").len(),
        puts_before,
        "the AWS secret was pushed again"
    );
    assert_eq!(p.vault.get("secret", &p.vault_path).0, vault_version);
    let new = f.assert_rotated();
    assert_eq!(new.id, new_id);
    // The access key id is public: it is read without registering it.
    let k8s_id = p
        .cluster
        .secret_value(&p.namespace, "aws-pair", "AWS_ACCESS_KEY_ID")
        .unwrap();
    let k8s_secret =
        p.cluster
            .secret_text(&f.env, &p.namespace, "aws-pair", "AWS_SECRET_ACCESS_KEY");
    assert_eq!(k8s_id, new_id.as_bytes());
    assert_eq!(k8s_secret, new.secret);
}
