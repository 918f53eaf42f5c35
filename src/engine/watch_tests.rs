//! Engine tests of the watch windows with an issuer that can disable keys
//! and a probe whose error ratio rises once the old key is disabled, as a
//! consumer still holding the old key would see.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::record::{Mode, Step};
use super::report::RunStatus;
use super::state::StepStatus;
use super::{Engine, EngineOptions};
use crate::issuers::{CurrentFields, Issuer, IssuerCx, IssuerError, IssuerSnapshot, Revocation};
use crate::key::Key;
use crate::output::Output;
use crate::playbook;
use crate::run_id::RunId;
use crate::seal::Sealer;
use crate::secret::SecretBytes;
use crate::store::local::LocalStore;
use crate::targets::Target;
use crate::watch::sample::{ProbeError, Reading, SeriesValue};
use crate::watch::spec::CheckSpec;
use crate::watch::window::Probe;
use crate::watch::{WatchWindow, Watcher};

const OLD_VALUE: &str = "old-secret-value-0000";

/// Keeps a log of its calls; `disable` sets the flag the probe reads.
struct DisablingIssuer {
    calls: Arc<Mutex<Vec<String>>>,
    old_disabled: Arc<AtomicBool>,
}

#[async_trait]
impl Issuer for DisablingIssuer {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn revocation(&self) -> Revocation {
        Revocation::DisableThenDelete
    }

    async fn preflight(
        &self,
        _cx: &IssuerCx,
        _current: &CurrentFields,
    ) -> Result<IssuerSnapshot, IssuerError> {
        Ok(IssuerSnapshot {
            state: serde_json::Value::Null,
            old_key_id: Some("old".into()),
            summary: "old key in use".into(),
        })
    }

    async fn create(&self, _cx: &IssuerCx, _snapshot: &IssuerSnapshot) -> Result<Key, IssuerError> {
        self.calls.lock().unwrap().push("create".into());
        Ok(Key::new("new").with_field("secret", SecretBytes::from_text("new-secret-value-1111")))
    }

    async fn disable(&self, _cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        self.calls.lock().unwrap().push(format!("disable {key_id}"));
        self.old_disabled.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn enable(&self, _cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        self.calls.lock().unwrap().push(format!("enable {key_id}"));
        self.old_disabled.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn delete(&self, _cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        self.calls.lock().unwrap().push(format!("delete {key_id}"));
        Ok(())
    }
}

/// Reads an error ratio of 0 while the old key works and 0.5 once it is
/// disabled.
struct OldKeyProbe {
    old_disabled: Arc<AtomicBool>,
}

#[async_trait]
impl Probe for OldKeyProbe {
    async fn read(&self, _check: &CheckSpec) -> Result<Reading, ProbeError> {
        let value = if self.old_disabled.load(Ordering::SeqCst) {
            0.5
        } else {
            0.0
        };
        Ok(Reading::Series(vec![SeriesValue {
            labels: "{}".into(),
            value,
        }]))
    }
}

struct Setup {
    dir: tempfile::TempDir,
    engine: Engine,
    playbook: playbook::Playbook,
    calls: Arc<Mutex<Vec<String>>>,
    old_disabled: Arc<AtomicBool>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.txt"), OLD_VALUE).unwrap();
    let text = "version: 1
name: watch-engine
issuer:
  type: random
targets:
  - name: key-file
    type: file
    path: key.txt
watch:
  queries:
    - name: errors
      query: error_ratio
      max: 0.1
      interval: 1s
      duration: 2s
      min_samples: 2
";
    let path = dir.path().join("playbook.yaml");
    let playbook = playbook::parse(&path, text).unwrap();
    let store = LocalStore::open(&dir.path().join("state")).unwrap();
    let engine = Engine::new(
        Arc::new(store),
        Sealer::from_key([7; 32]),
        Arc::new(Output::silent()),
        EngineOptions::default(),
    );
    Setup {
        dir,
        engine,
        playbook,
        calls: Arc::default(),
        old_disabled: Arc::default(),
    }
}

impl Setup {
    async fn run(&self) -> super::report::RunReport {
        let issuer = Box::new(DisablingIssuer {
            calls: self.calls.clone(),
            old_disabled: self.old_disabled.clone(),
        });
        let mut targets: Vec<Arc<dyn Target>> = Vec::new();
        let mut kinds = std::collections::HashMap::new();
        let shared = crate::targets::shared::SharedClients::default();
        for spec in &self.playbook.targets {
            let built = spec
                .build(&crate::targets::Selection::Current, &shared)
                .await
                .unwrap();
            for target in built {
                kinds.insert(target.name().to_string(), spec.kind_name());
                targets.push(Arc::from(target));
            }
        }
        let probe = Box::new(OldKeyProbe {
            old_disabled: self.old_disabled.clone(),
        });
        let watch = self.playbook.watch.clone().unwrap();
        let watcher = Arc::new(Watcher::with_probe(watch, probe));
        let run_id = RunId::generate();
        self.engine
            .start_run(
                &self.playbook,
                &run_id,
                Mode::Normal,
                super::Built {
                    issuer,
                    targets,
                    kinds,
                    watch: Some(watcher),
                },
            )
            .await
            .unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn after_revoke_breach_reenables_old_key() {
    let setup = setup();
    let report = setup.run().await;

    assert_eq!(report.status, RunStatus::RolledBack, "{}", report.message);
    assert_eq!(
        *setup.calls.lock().unwrap(),
        vec!["create", "disable old", "enable old", "delete new"]
    );
    assert!(!setup.old_disabled.load(Ordering::SeqCst));
    let content = std::fs::read_to_string(setup.dir.path().join("key.txt")).unwrap();
    assert_eq!(content, OLD_VALUE);

    let run_id = report.run_id.parse().unwrap();
    let state = setup.engine.load_state(&run_id).await.unwrap();
    assert!(state.is_done(&Step::Watch(WatchWindow::Overlap)));
    assert!(matches!(
        state.status(&Step::Watch(WatchWindow::AfterRevoke)),
        Some(StepStatus::Failed { class, .. }) if class == "fail"
    ));
    assert!(!state.was_attempted(&Step::Retire));
    assert!(state.is_done(&Step::Reenable));
    let reason = state.rollback_reason.unwrap();
    assert!(reason.starts_with("watch after-revoke failed"), "{reason}");
    assert!(reason.contains("0.5 > 0.1"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn overlap_samples_are_journaled_with_their_window() {
    let setup = setup();
    let report = setup.run().await;

    let rounds = &report.watch.rounds;
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0].window, WatchWindow::Overlap);
    assert_eq!(rounds[0].verdict.as_deref(), Some("pass"));
    assert_eq!(rounds[0].samples.len(), 2);
    assert_eq!(rounds[1].window, WatchWindow::AfterRevoke);
    assert_eq!(rounds[1].verdict.as_deref(), Some("fail"));
    // The breach ends the window at its first sample.
    assert_eq!(rounds[1].samples.len(), 1);
    assert_eq!(rounds[1].samples[0].sample.value.as_deref(), Some("0.5"));
}
