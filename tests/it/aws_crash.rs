//! kill -9 at every journal point of an IAM key rotation into Secrets
//! Manager and a .env file: `resume` then finishes the run, and, from the
//! same crash, `rollback` puts back the old key, the old AWSCURRENT version
//! and the old file, leaving no extra access key behind.

use std::path::{Path, PathBuf};

use crate::aws::{Fixture, fixture};
use crate::support::TestEnv;
use crate::support::crash::{CrashFixture, run_matrix};
use crate::support::dotenv_value;

const POLICY: &str = "policy:\n  concurrency: 1\n";

pub struct AwsCrash {
    pub f: Fixture,
    pub playbook: PathBuf,
}

pub fn aws_crash() -> AwsCrash {
    let f = fixture();
    let playbook = f.playbook(POLICY);
    AwsCrash { f, playbook }
}

impl CrashFixture for AwsCrash {
    fn env(&self) -> &TestEnv {
        &self.f.env
    }

    fn playbook(&self) -> &Path {
        &self.playbook
    }

    /// The key pair, as `id:secret`.
    fn old_value(&self) -> String {
        format!("{}:{}", self.f.old.id, self.f.old.secret)
    }

    fn target_values(&self) -> Vec<(String, String)> {
        let (id, secret) = self.f.secret_pair();
        let text = self.f.env_text();
        let env_id = dotenv_value(&text, "AWS_ACCESS_KEY_ID").unwrap();
        let env_secret = dotenv_value(&text, "AWS_SECRET_ACCESS_KEY").unwrap();
        vec![
            ("aws-secret".into(), format!("{id}:{secret}")),
            ("app-env".into(), format!("{env_id}:{env_secret}")),
        ]
    }

    fn issuer_keys(&self) -> Option<Vec<(String, bool)>> {
        Some(self.f.moto.keys(&self.f.user))
    }

    fn old_key_id(&self) -> Option<String> {
        Some(self.f.old.id.clone())
    }

    /// IAM accepts a key while it exists and is active.
    fn old_key_accepted(&self) -> Option<bool> {
        Some(self.f.moto.key_active(&self.f.user, &self.f.old.id) == Some(true))
    }

    fn check_rotated(&self, point: &str, _new_value: &str) {
        let new = self.f.assert_rotated();
        assert_ne!(new.id, self.f.old.id, "{point}");
    }

    fn check_original(&self, _point: &str) {
        self.f.assert_original();
    }
}

#[test]
fn aws_crash_matrix() {
    run_matrix(
        "aws_iam issuer into aws_secret and dotenv",
        &["aws_iam", "aws_secret", "dotenv"],
        aws_crash,
    );
}
