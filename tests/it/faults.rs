//! The fault table: the fault proxy in front of every server keywheel
//! calls, one fault per row on the request that matters most at that
//! server, and the outcome the row must have.
//!
//! Faults that lose a response after the server acted on the request (a
//! slow, truncated or reset response) test that a repeated call recognises
//! its own first attempt. Rows that end the run check the shared invariants of
//! `support::crash`: targets agree, the issuer keeps no orphan key, the
//! old key works unless it was retired.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::support::aws::{json_rule, query_rule};
use crate::support::crash::{self, CrashFixture, Settled};
use crate::support::key_service::KeyService;
use crate::support::kube::{Cluster, PLAYBOOK_KUBECONFIG_ENV, emulator_kubeconfig};
use crate::support::prometheus::Prometheus;
use crate::support::proxy::{Fault, FaultProxy, Rule, Seen};
use crate::support::vault::Vault;
use crate::support::{EXIT_ATTENTION, EXIT_FAILED, EXIT_OK, Run, TestEnv, spawn_named};

/// Timeout keywheel gets for each call in these tests.
const TIMEOUT: &str = "2s";
/// Pause before each of the four parts of a slow response: each is
/// shorter than the timeout, all four together longer.
const SLOW_PART: Duration = Duration::from_millis(900);
/// `Retry-After` of the throttled responses, in seconds.
const RETRY_AFTER: u64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// OpenBao, the secret write of the vault target.
    OpenBao,
    /// moto, `PutSecretValue` of the aws_secret target.
    SecretsManager,
    /// moto, `CreateAccessKey` of the aws_iam issuer.
    Iam,
    /// moto, `GetCallerIdentity` with the new key (aws_iam verification).
    Sts,
    /// The Kubernetes API emulator, the Secret update.
    Kubernetes,
    /// The example key service, the create of the http issuer.
    KeyService,
    /// Prometheus, the instant queries of the watch.
    Prometheus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Injected {
    /// One 5xx response with the server's own error body.
    Unavailable,
    /// One 429 with `Retry-After`.
    ThrottledRetryAfter,
    /// One 429 without `Retry-After`.
    Throttled,
    /// One request never responded to.
    Hang,
    /// One connection closed before any response.
    Reset,
    /// One response reset halfway through its body.
    ResetMidBody,
    /// One response cut short of its `Content-Length`.
    Truncated,
    /// One response whose body takes longer than the timeout.
    Slow,
    /// Every matching request gets a 5xx response.
    AlwaysUnavailable,
    /// One response with an error code that says retrying cannot help.
    Terminal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The call was sent again and the run completed.
    Retried,
    /// The watch counted the sample as an error, took the next one on its
    /// schedule, and the run completed.
    SampleSkipped,
    /// The run failed before any target changed; no key is left behind.
    FailedUnchanged,
    /// The run failed and was rolled back.
    RolledBack,
    /// The watch ended inconclusive and the run is held.
    Held,
}

/// How often the faulted call was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    Once,
    /// At least twice: the fault, then a repeat.
    Again,
    /// Exactly this many times: the retry limit.
    Times(usize),
    /// At least this many times, within a time limit.
    AtLeast(usize),
}

struct Row {
    server: Server,
    fault: Injected,
    outcome: Outcome,
    sent: Sent,
}

const fn row(server: Server, fault: Injected, outcome: Outcome, sent: Sent) -> Row {
    Row {
        server,
        fault,
        outcome,
        sent,
    }
}

use Injected::*;
use Outcome::*;
use Sent::*;
use Server::*;

/// Attempts of a call under the default retry policy.
const MAX_ATTEMPTS: usize = 6;

/// The expected outcome of each fault at each server.
///
/// - The aws_iam create has no idempotency token, so after a lost
///   response it is not sent again: keywheel lists the user's keys, deletes the one
///   the lost call made, and fails without changing anything. Throttling
///   is a refusal, so a throttled create is repeated.
/// - Verification with the new key treats a denial as propagation still
///   under way and tries again until its propagation timeout.
/// - The watch does not repeat a failed query: the next sample on its
///   schedule is the repeat, and a window without enough good samples is
///   inconclusive, which these playbooks hold.
const TABLE: &[Row] = &[
    row(OpenBao, Unavailable, Retried, Again),
    row(OpenBao, ThrottledRetryAfter, Retried, Again),
    row(OpenBao, Throttled, Retried, Again),
    row(OpenBao, Hang, Retried, Again),
    row(OpenBao, Reset, Retried, Again),
    row(OpenBao, ResetMidBody, Retried, Again),
    row(OpenBao, Truncated, Retried, Again),
    row(OpenBao, Slow, Retried, Again),
    row(OpenBao, AlwaysUnavailable, RolledBack, Times(MAX_ATTEMPTS)),
    row(OpenBao, Terminal, RolledBack, Once),
    row(SecretsManager, Unavailable, Retried, Again),
    row(SecretsManager, ThrottledRetryAfter, Retried, Again),
    row(SecretsManager, Throttled, Retried, Again),
    row(SecretsManager, Hang, Retried, Again),
    row(SecretsManager, Reset, Retried, Again),
    row(SecretsManager, ResetMidBody, Retried, Again),
    row(SecretsManager, Truncated, Retried, Again),
    row(SecretsManager, Slow, Retried, Again),
    row(
        SecretsManager,
        AlwaysUnavailable,
        RolledBack,
        Times(MAX_ATTEMPTS),
    ),
    row(SecretsManager, Terminal, RolledBack, Once),
    row(Iam, Unavailable, FailedUnchanged, Once),
    row(Iam, ThrottledRetryAfter, Retried, Again),
    row(Iam, Throttled, Retried, Again),
    row(Iam, Hang, FailedUnchanged, Once),
    row(Iam, Reset, FailedUnchanged, Once),
    row(Iam, ResetMidBody, FailedUnchanged, Once),
    row(Iam, Truncated, FailedUnchanged, Once),
    row(Iam, Slow, FailedUnchanged, Once),
    row(Iam, AlwaysUnavailable, FailedUnchanged, Once),
    row(Iam, Terminal, FailedUnchanged, Once),
    row(Sts, Unavailable, Retried, Again),
    row(Sts, ThrottledRetryAfter, Retried, Again),
    row(Sts, Throttled, Retried, Again),
    row(Sts, Hang, Retried, Again),
    row(Sts, Reset, Retried, Again),
    row(Sts, ResetMidBody, Retried, Again),
    row(Sts, Truncated, Retried, Again),
    row(Sts, Slow, Retried, Again),
    row(Sts, AlwaysUnavailable, RolledBack, AtLeast(3)),
    row(Sts, Terminal, Retried, Again),
    row(Kubernetes, Unavailable, Retried, Again),
    row(Kubernetes, ThrottledRetryAfter, Retried, Again),
    row(Kubernetes, Throttled, Retried, Again),
    row(Kubernetes, Hang, Retried, Again),
    row(Kubernetes, Reset, Retried, Again),
    row(Kubernetes, ResetMidBody, Retried, Again),
    row(Kubernetes, Truncated, Retried, Again),
    row(Kubernetes, Slow, Retried, Again),
    row(
        Kubernetes,
        AlwaysUnavailable,
        RolledBack,
        Times(MAX_ATTEMPTS),
    ),
    row(Kubernetes, Terminal, RolledBack, Once),
    row(KeyService, Unavailable, Retried, Again),
    row(KeyService, ThrottledRetryAfter, Retried, Again),
    row(KeyService, Throttled, Retried, Again),
    row(KeyService, Hang, Retried, Again),
    row(KeyService, Reset, Retried, Again),
    row(KeyService, ResetMidBody, Retried, Again),
    row(KeyService, Truncated, Retried, Again),
    row(KeyService, Slow, Retried, Again),
    row(
        KeyService,
        AlwaysUnavailable,
        FailedUnchanged,
        Times(MAX_ATTEMPTS),
    ),
    row(KeyService, Terminal, FailedUnchanged, Once),
    row(Prometheus, Unavailable, SampleSkipped, AtLeast(4)),
    row(Prometheus, ThrottledRetryAfter, SampleSkipped, AtLeast(4)),
    row(Prometheus, Throttled, SampleSkipped, AtLeast(4)),
    row(Prometheus, Hang, SampleSkipped, AtLeast(4)),
    row(Prometheus, Reset, SampleSkipped, AtLeast(4)),
    row(Prometheus, ResetMidBody, SampleSkipped, AtLeast(4)),
    row(Prometheus, Truncated, SampleSkipped, AtLeast(4)),
    row(Prometheus, Slow, SampleSkipped, AtLeast(4)),
    row(Prometheus, AlwaysUnavailable, Held, AtLeast(3)),
    row(Prometheus, Terminal, SampleSkipped, AtLeast(4)),
];

/// Servers shared by the rows: one key service and one Kubernetes
/// emulator, with a namespace, key or path of their own per row.
struct Shared {
    vault: Vault,
    key_service: KeyService,
    cluster: Cluster,
    prometheus: Prometheus,
}

#[test]
fn every_fault_at_every_server_has_its_outcome() {
    let shared = Shared {
        vault: Vault::from_env(),
        key_service: KeyService::start(),
        cluster: Cluster::emulator(),
        prometheus: Prometheus::from_env(),
    };
    let failed = std::sync::Mutex::new(Vec::new());
    let injected = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for offset in 0..THREADS {
            let (shared, failed, injected) = (&shared, &failed, &injected);
            spawn_named(scope, move || {
                for row in TABLE.iter().skip(offset).step_by(THREADS) {
                    // A failed row is reported, and the other rows still run.
                    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        check_row(shared, row)
                    }));
                    match checked {
                        Ok(count) => {
                            injected.fetch_add(count, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(_) => {
                            let label = format!("{:?} x {:?}", row.server, row.fault);
                            failed.lock().unwrap().push(label);
                        }
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    assert!(failed.is_empty(), "rows that failed: {failed:#?}");
    let servers: std::collections::BTreeSet<String> =
        TABLE.iter().map(|r| format!("{:?}", r.server)).collect();
    let faults: std::collections::BTreeSet<String> =
        TABLE.iter().map(|r| format!("{:?}", r.fault)).collect();
    // The figure in docs/robustness.md. `-- --nocapture` shows it.
    println!(
        "fault table: {} rows, {} faults x {} servers, {} faulted requests",
        TABLE.len(),
        faults.len(),
        servers.len(),
        injected.into_inner()
    );
}

/// Rows checked at once; most of a row's time is spent waiting.
const THREADS: usize = 4;

/// A fixture with the proxy in front of its faulted server.
trait Faulted {
    fn fixture(&self) -> &dyn CrashFixture;
    fn proxy(&self) -> &FaultProxy;
}

/// A fixture and a proxy of its own.
struct Proxied<F> {
    fixture: F,
    proxy: FaultProxy,
}

impl<F: CrashFixture> Faulted for Proxied<F> {
    fn fixture(&self) -> &dyn CrashFixture {
        &self.fixture
    }

    fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }
}

/// The AWS fixture already talks to moto through a proxy.
impl Faulted for crate::aws_crash::AwsCrash {
    fn fixture(&self) -> &dyn CrashFixture {
        self
    }

    fn proxy(&self) -> &FaultProxy {
        &self.f.proxy
    }
}

/// One row's objects and the rule that injects its fault.
struct Setup<'s> {
    faulted: Box<dyn Faulted + 's>,
    rule: Rule,
}

/// Injects the row's fault, runs the fixture's playbook, checks the
/// row's outcome, and returns how many faults were injected.
fn check_row(shared: &Shared, row: &Row) -> usize {
    let label = format!("{:?} x {:?}", row.server, row.fault);
    let count = match row.fault {
        AlwaysUnavailable => u32::MAX,
        _ => 1,
    };
    let setup = set_up(shared, row.server, count, fault_of(row.server, row.fault));
    let (rule, proxy) = (&setup.rule, setup.faulted.proxy());
    proxy.inject(rule.clone());

    let fixture = setup.faulted.fixture();
    let playbook = fixture.playbook().to_str().unwrap().to_string();
    let run = fixture
        .env()
        .keywheel(&["run", &playbook, "--yes", "--json"]);

    let calls = matching(proxy, rule);
    check_outcome(fixture, row, &label, &run);
    check_sent(row, &label, &calls);
    if row.fault == ThrottledRetryAfter && row.server != Prometheus {
        let gap = calls[1].at - calls[0].at;
        assert!(
            gap >= Duration::from_secs(RETRY_AFTER),
            "{label}: repeated after {gap:?}, before Retry-After"
        );
    }
    if row.fault == AlwaysUnavailable && matches!(row.sent, Times(_)) {
        check_backoff(&label, &calls);
    }
    proxy
        .seen()
        .iter()
        .filter(|seen| seen.fault.is_some())
        .count()
}

/// Checks the run's exit, status and, for runs that ended, the shared
/// invariants.
fn check_outcome(fixture: &dyn CrashFixture, row: &Row, label: &str, run: &Run) {
    let report = run.json();
    let run_id = report["run_id"].as_str().unwrap_or_default().to_string();
    let (code, status, settled) = match row.outcome {
        Retried | SampleSkipped => (EXIT_OK, "completed", Settled::New),
        FailedUnchanged => (EXIT_FAILED, "failed", Settled::Old),
        RolledBack => (EXIT_FAILED, "rolled_back", Settled::Old),
        Held => (EXIT_ATTENTION, "held", Settled::New),
    };
    assert_eq!(
        (run.code, report["status"].as_str()),
        (Some(code), Some(status)),
        "{label}: unexpected outcome\n{}",
        run.stderr
    );
    if row.outcome == Held {
        let verdict = &report["watch"]["rounds"][0]["verdict"];
        assert_eq!(verdict, "inconclusive", "{label}");
        // Undone, so that the invariants apply to a finished run.
        fixture
            .env()
            .keywheel(&["rollback", &run_id])
            .assert_code(EXIT_OK);
        assert_eq!(crash::check(fixture, label, Some(&run_id)), Settled::Old);
        return;
    }
    if row.outcome == SampleSkipped {
        let results: Vec<&str> = report["watch"]["rounds"][0]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["result"].as_str().unwrap())
            .collect();
        let errors = results.iter().filter(|r| **r == "error").count();
        assert_eq!(errors, 1, "{label}: samples {results:?}");
    }
    assert_eq!(crash::check(fixture, label, Some(&run_id)), settled);
}

/// Returns the requests the rule matches, in order, faulted or not.
fn matching(proxy: &FaultProxy, rule: &Rule) -> Vec<Seen> {
    proxy
        .seen()
        .into_iter()
        .filter(|seen| rule.matches_seen(seen))
        .collect()
}

fn check_sent(row: &Row, label: &str, calls: &[Seen]) {
    let sent = calls.len();
    match row.sent {
        Once => assert_eq!(sent, 1, "{label}: sent {sent} times"),
        Again => assert!(sent >= 2, "{label}: sent {sent} times"),
        Times(n) => assert_eq!(sent, n, "{label}: sent {sent} times"),
        AtLeast(n) => assert!(sent >= n, "{label}: sent {sent} times"),
    }
    assert!(
        calls[0].fault.is_some(),
        "{label}: the first call was not faulted"
    );
}

/// Checks that the waits between attempts grow: under the default policy
/// the wait before attempt n+1 is 200 ms x 2^(n-1), times a random factor
/// in [0.5, 1).
fn check_backoff(label: &str, calls: &[Seen]) {
    let mut nominal = Duration::from_millis(200);
    for pair in calls.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= nominal / 2,
            "{label}: waited {gap:?} where backoff asks at least {:?}",
            nominal / 2
        );
        assert!(
            gap < nominal + Duration::from_millis(900),
            "{label}: waited {gap:?} where backoff asks at most {nominal:?}"
        );
        nominal *= 2;
    }
}

/// Builds the fixture of `server` with keywheel pointed at a proxy, and
/// the rule that gives `count` of its faulted calls `fault`.
fn set_up(shared: &Shared, server: Server, count: u32, fault: Fault) -> Setup<'_> {
    match server {
        OpenBao => {
            let mut fixture = crate::crash::random_vault(&shared.vault);
            let proxy = FaultProxy::start(&shared.vault.addr);
            amend(
                &fixture.playbook,
                "    type: vault",
                &format!("    timeout: {TIMEOUT}"),
            );
            fixture.env.env("VAULT_ADDR", &proxy.url);
            Setup {
                faulted: Box::new(Proxied { fixture, proxy }),
                rule: Rule::new(Some("POST"), "^/v1/secret/data/", count, fault),
            }
        }
        SecretsManager | Iam | Sts => {
            let aws = crate::aws_crash::aws_crash();
            amend(
                &aws.playbook,
                "  type: aws_iam",
                &format!("  timeout: {TIMEOUT}"),
            );
            amend(
                &aws.playbook,
                "    type: aws_secret",
                &format!("    timeout: {TIMEOUT}"),
            );
            let text = std::fs::read_to_string(&aws.playbook).unwrap();
            let text = text.replace("propagation_timeout: 20s", "propagation_timeout: 6s");
            std::fs::write(&aws.playbook, text).unwrap();
            let rule = match server {
                SecretsManager => json_rule("PutSecretValue", count, fault),
                Iam => query_rule("CreateAccessKey", count, fault),
                _ => query_rule("GetCallerIdentity", count, fault),
            };
            Setup {
                faulted: Box::new(aws),
                rule,
            }
        }
        Kubernetes => {
            let mut fixture = crate::kubernetes::crash_setup(&shared.cluster);
            let proxy = FaultProxy::start(&shared.cluster.control().url);
            amend(
                &fixture.playbook,
                "    type: kubernetes",
                &format!("    timeout: {TIMEOUT}"),
            );
            let kubeconfig = fixture.env.path("kubeconfig-through-proxy");
            std::fs::write(&kubeconfig, emulator_kubeconfig(&proxy.url)).unwrap();
            fixture
                .env
                .env(PLAYBOOK_KUBECONFIG_ENV, kubeconfig.to_str().unwrap());
            // Only the first namespace's Secret: the other one is pushed
            // (and restored) without faults.
            let path = format!("^/api/v1/namespaces/{}/secrets/", fixture.namespaces[0]);
            Setup {
                faulted: Box::new(Proxied { fixture, proxy }),
                rule: Rule::new(Some("PUT"), &path, count, fault),
            }
        }
        KeyService => {
            let mut fixture = crate::http_crash::http_crash(&shared.key_service, &shared.vault);
            let proxy = FaultProxy::start(&shared.key_service.url);
            amend(
                &fixture.playbook,
                "  type: http",
                &format!("  timeout: {TIMEOUT}"),
            );
            fixture.env.env("KEYSERVICE_URL", &proxy.url);
            Setup {
                faulted: Box::new(Proxied { fixture, proxy }),
                rule: Rule::new(Some("POST"), "^/v1/keys$", count, fault),
            }
        }
        Prometheus => {
            let mut fixture = Watched::new();
            let proxy = FaultProxy::start(&shared.prometheus.url);
            fixture.setup.env.env("WATCH_PROMETHEUS", &proxy.url);
            Setup {
                faulted: Box::new(Proxied { fixture, proxy }),
                rule: Rule::new(Some("GET"), "^/api/v1/query", count, fault),
            }
        }
    }
}

/// Inserts `line` after the first line of the playbook at `path` that is
/// `after`.
fn amend(path: &Path, after: &str, line: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let needle = format!("\n{after}\n");
    assert!(text.contains(&needle), "no line {after:?} in {text}");
    let amended = text.replacen(&needle, &format!("\n{after}\n{line}\n"), 1);
    std::fs::write(path, amended).unwrap();
}

/// Builds the fault a row injects, with the server's own error bodies.
fn fault_of(server: Server, fault: Injected) -> Fault {
    let status = |status: u16, retry_after: Option<u64>, kind: Body| Fault::Status {
        status,
        retry_after: retry_after.map(|s| s.to_string()),
        body: error_body(server, kind, retry_after),
    };
    match fault {
        Unavailable | AlwaysUnavailable => status(503, None, Body::Unavailable),
        ThrottledRetryAfter => status(429, Some(RETRY_AFTER), Body::Throttled),
        Throttled => status(429, None, Body::Throttled),
        Hang => Fault::Hang,
        Reset => Fault::Reset,
        ResetMidBody => Fault::ResetMidBody,
        Truncated => Fault::Truncate,
        Slow => Fault::SlowBody(SLOW_PART),
        Terminal => {
            let code = match server {
                SecretsManager => 400,
                KeyService => 401,
                Prometheus => 400,
                _ => 403,
            };
            status(code, None, Body::Terminal)
        }
    }
}

#[derive(Clone, Copy)]
enum Body {
    Unavailable,
    Throttled,
    Terminal,
}

/// Builds an error body in the server's own format, with the code that
/// names the error.
fn error_body(server: Server, body: Body, retry_after: Option<u64>) -> String {
    let value = match (server, body) {
        (OpenBao, Body::Unavailable) => json!({"errors": ["Vault is sealed"]}),
        (OpenBao, Body::Throttled) => json!({"errors": ["rate limit quota exceeded"]}),
        (OpenBao, Body::Terminal) => json!({"errors": ["permission denied"]}),
        (SecretsManager, Body::Unavailable) => {
            json!({"__type": "ServiceUnavailableException", "message": "unavailable"})
        }
        (SecretsManager, Body::Throttled) => {
            json!({"__type": "ThrottlingException", "message": "Rate exceeded"})
        }
        (SecretsManager, Body::Terminal) => {
            json!({"__type": "AccessDeniedException", "message": "not authorized"})
        }
        (Iam | Sts, body) => {
            let code = match body {
                Body::Unavailable => "ServiceUnavailable",
                Body::Throttled => "Throttling",
                Body::Terminal => "AccessDenied",
            };
            return format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>injected</Message></Error><RequestId>keywheel-test</RequestId></ErrorResponse>"
            );
        }
        (Kubernetes, body) => {
            let (code, reason) = match body {
                Body::Unavailable => (503, "ServiceUnavailable"),
                Body::Throttled => (429, "TooManyRequests"),
                Body::Terminal => (403, "Forbidden"),
            };
            let mut status = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "injected", "reason": reason, "code": code,
            });
            if let Some(seconds) = retry_after {
                status["details"] = json!({"retryAfterSeconds": seconds});
            }
            status
        }
        (KeyService, Body::Unavailable) => {
            json!({"error": {"code": "unavailable", "message": "try again"}})
        }
        (KeyService, Body::Throttled) => {
            json!({"error": {"code": "rate_limited", "message": "slow down"}})
        }
        (KeyService, Body::Terminal) => {
            json!({"error": {"code": "invalid_admin_token", "message": "unknown token"}})
        }
        (Prometheus, Body::Terminal) => {
            json!({"status": "error", "errorType": "bad_data", "error": "parse error"})
        }
        (Prometheus, _) => {
            json!({"status": "error", "errorType": "unavailable", "error": "overloaded"})
        }
    };
    value.to_string()
}

/// A random key into the .env file of a key service's consumer, with a
/// watch of its error ratio through Prometheus that holds the run when
/// it is inconclusive.
struct Watched {
    setup: crate::watch::Setup,
    playbook: std::path::PathBuf,
}

impl Watched {
    fn new() -> Self {
        let setup = crate::watch::setup();
        let query = setup.service.server_error_ratio();
        // Long enough for three good samples after one that times out.
        let check = crate::watch::check(&query, "max: 0.5", "      duration: 6s\n")
            .replace("      duration: 4s\n", "");
        let connection = format!(
            "  on_inconclusive: hold\n  prometheus:\n    address_env: WATCH_PROMETHEUS\n    timeout: {TIMEOUT}\n"
        );
        let playbook = crate::watch::playbook(&setup, &check, &connection);
        Self { setup, playbook }
    }
}

impl CrashFixture for Watched {
    fn env(&self) -> &TestEnv {
        &self.setup.env
    }

    fn playbook(&self) -> &Path {
        &self.playbook
    }

    fn old_value(&self) -> String {
        self.setup.old_key.clone()
    }

    fn target_values(&self) -> Vec<(String, String)> {
        vec![("app-env".into(), self.setup.service.consumer_key())]
    }
}
