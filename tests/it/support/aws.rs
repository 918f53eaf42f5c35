//! A blocking client for moto, the AWS emulator the dev stack runs on
//! 127.0.0.1, to set up and inspect what the tests rotate. Helpers point
//! keywheel at it and read or disturb its AWS calls through the fault
//! proxy.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_iam::types::StatusType;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};

use super::TestEnv;
use super::proxy::{Fault, FaultProxy, Rule, Seen};

/// Region every test uses; moto keeps separate state per region.
pub const REGION: &str = "us-east-1";

/// A new access key: id and secret.
#[derive(Clone, Debug)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

pub struct Moto {
    pub endpoint: String,
    runtime: tokio::runtime::Runtime,
    iam: aws_sdk_iam::Client,
    secrets: aws_sdk_secretsmanager::Client,
}

impl Moto {
    /// Connects to the dev stack's moto. Panics unless its address is on
    /// 127.0.0.1: no test may reach AWS.
    pub fn from_env() -> Self {
        let endpoint = super::stack_env("AWS_ENDPOINT_URL");
        assert!(
            endpoint.starts_with("http://127.0.0.1:"),
            "AWS_ENDPOINT_URL is {endpoint}, not moto on 127.0.0.1"
        );
        let credentials = Credentials::new("testing", "testing", None, None, "moto");
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(REGION))
                .endpoint_url(&endpoint)
                .credentials_provider(credentials.clone())
                .build(),
        );
        let secrets = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(REGION))
                .endpoint_url(&endpoint)
                .credentials_provider(credentials)
                .build(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            endpoint,
            runtime,
            iam,
            secrets,
        }
    }

    fn block<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    pub fn create_user(&self, user: &str) {
        self.block(self.iam.create_user().user_name(user).send())
            .expect("CreateUser");
    }

    pub fn create_key(&self, user: &str) -> AccessKey {
        let output = self
            .block(self.iam.create_access_key().user_name(user).send())
            .expect("CreateAccessKey");
        let key = output.access_key().expect("an access key");
        AccessKey {
            id: key.access_key_id().to_string(),
            secret: key.secret_access_key().to_string(),
        }
    }

    /// Lists the user's access keys: (id, active).
    pub fn keys(&self, user: &str) -> Vec<(String, bool)> {
        let output = self
            .block(self.iam.list_access_keys().user_name(user).send())
            .expect("ListAccessKeys");
        output
            .access_key_metadata()
            .iter()
            .map(|k| {
                (
                    k.access_key_id().unwrap_or_default().to_string(),
                    k.status() == Some(&StatusType::Active),
                )
            })
            .collect()
    }

    /// Returns whether `id` is active, or `None` when it does not exist.
    pub fn key_active(&self, user: &str, id: &str) -> Option<bool> {
        self.keys(user)
            .into_iter()
            .find(|(key, _)| key == id)
            .map(|(_, active)| active)
    }

    pub fn set_key_active(&self, user: &str, id: &str, active: bool) {
        let status = if active {
            StatusType::Active
        } else {
            StatusType::Inactive
        };
        self.block(
            self.iam
                .update_access_key()
                .user_name(user)
                .access_key_id(id)
                .status(status)
                .send(),
        )
        .expect("UpdateAccessKey");
    }

    /// Creates a secret, with a first value when given; returns its ARN.
    pub fn create_secret(&self, name: &str, value: Option<&str>) -> String {
        let output = self
            .block(
                self.secrets
                    .create_secret()
                    .name(name)
                    .set_secret_string(value.map(str::to_string))
                    .send(),
            )
            .expect("CreateSecret");
        output.arn().expect("an ARN").to_string()
    }

    /// Puts a version with the given labels; returns its version id.
    pub fn put_version(&self, name: &str, value: &str, stages: &[&str]) -> String {
        let mut request = self
            .secrets
            .put_secret_value()
            .secret_id(name)
            .secret_string(value);
        for stage in stages {
            request = request.version_stages(*stage);
        }
        let output = self.block(request.send()).expect("PutSecretValue");
        output.version_id().expect("a version id").to_string()
    }

    /// Returns the staging labels by version id.
    pub fn stages(&self, name: &str) -> BTreeMap<String, BTreeSet<String>> {
        let output = self
            .block(self.secrets.describe_secret().secret_id(name).send())
            .expect("DescribeSecret");
        output
            .version_ids_to_stages()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|(version, stages)| (version, stages.into_iter().collect()))
            .collect()
    }

    /// Returns the version carrying `stage`, when exactly one does.
    pub fn holder(&self, name: &str, stage: &str) -> Option<String> {
        let holders: Vec<String> = self
            .stages(name)
            .into_iter()
            .filter(|(_, stages)| stages.contains(stage))
            .map(|(version, _)| version)
            .collect();
        match holders.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }

    /// Reads the SecretString of the version carrying `stage`. Always names
    /// the stage, because moto returns a stale version for a read without one.
    pub fn value_at(&self, name: &str, stage: &str) -> String {
        let output = self
            .block(
                self.secrets
                    .get_secret_value()
                    .secret_id(name)
                    .version_stage(stage)
                    .send(),
            )
            .expect("GetSecretValue");
        output.secret_string().expect("a SecretString").to_string()
    }

    /// Reads the JSON object of the `AWSCURRENT` version.
    pub fn current_json(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.value_at(name, "AWSCURRENT")).expect("a JSON secret")
    }

    /// Removes `stage` from `version`.
    pub fn remove_stage(&self, name: &str, stage: &str, version: &str) {
        self.block(
            self.secrets
                .update_secret_version_stage()
                .secret_id(name)
                .version_stage(stage)
                .remove_from_version_id(version)
                .send(),
        )
        .expect("UpdateSecretVersionStage");
    }

    /// Schedules the secret for deletion in 7 days.
    pub fn schedule_deletion(&self, name: &str) {
        self.block(
            self.secrets
                .delete_secret()
                .secret_id(name)
                .recovery_window_in_days(7)
                .send(),
        )
        .expect("DeleteSecret");
    }

    pub fn is_scheduled_for_deletion(&self, name: &str) -> bool {
        let output = self
            .block(self.secrets.describe_secret().secret_id(name).send())
            .expect("DescribeSecret");
        output.deleted_date().is_some()
    }
}

/// Points keywheel at `endpoint` (moto, or a proxy in front of it) with
/// moto's test credentials. Shared AWS settings of the developer's machine
/// are kept out, and the instance metadata address is never tried.
pub fn configure(env: &mut TestEnv, endpoint: &str) {
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    for name in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL_IAM",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    ] {
        env.unset_env(name);
    }
    // Empty files: the SDK warns about missing ones.
    let config = env.path("aws-config");
    let credentials = env.path("aws-credentials");
    std::fs::write(&config, "").unwrap();
    std::fs::write(&credentials, "").unwrap();
    env.env("AWS_ENDPOINT_URL", endpoint);
    env.env("AWS_REGION", REGION);
    env.env("AWS_DEFAULT_REGION", REGION);
    env.env("AWS_ACCESS_KEY_ID", "testing");
    env.env("AWS_SECRET_ACCESS_KEY", "testing");
    env.env("AWS_EC2_METADATA_DISABLED", "true");
    env.env("AWS_CONFIG_FILE", config.to_str().unwrap());
    env.env("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap());
}

/// Returns the requests for AWS operation `operation` (such as `PutSecretValue`), in
/// the order they were sent. The JSON protocol names the operation in the
/// `X-Amz-Target` header, the query protocol in the `Action` form field.
pub fn calls(proxy: &FaultProxy, operation: &str) -> Vec<Seen> {
    proxy
        .seen()
        .into_iter()
        .filter(|seen| operation_of(seen).as_deref() == Some(operation))
        .collect()
}

/// Returns the AWS operation a request calls.
pub fn operation_of(seen: &Seen) -> Option<String> {
    let target = seen
        .headers
        .iter()
        .find(|(name, _)| name == "x-amz-target")
        .and_then(|(_, value)| value.rsplit('.').next().map(str::to_string));
    target.or_else(|| {
        String::from_utf8_lossy(&seen.body)
            .split('&')
            .find_map(|pair| pair.strip_prefix("Action=").map(str::to_string))
    })
}

/// Parses the JSON body of a JSON-protocol request.
pub fn json_body(seen: &Seen) -> serde_json::Value {
    serde_json::from_slice(&seen.body).expect("a JSON request body")
}

/// Builds a fault rule for `count` calls of a JSON-protocol operation
/// (Secrets Manager).
pub fn json_rule(operation: &str, count: u32, fault: Fault) -> Rule {
    Rule::new(Some("POST"), "^/", count, fault)
        .with_header("x-amz-target", &format!(r"\.{operation}$"))
}

/// Builds a fault rule for `count` calls of a query-protocol operation
/// (IAM, STS).
pub fn query_rule(operation: &str, count: u32, fault: Fault) -> Rule {
    Rule::new(Some("POST"), "^/", count, fault).with_body(&format!("(^|&)Action={operation}(&|$)"))
}

/// Builds an AWS JSON-protocol error response with HTTP status 400.
pub fn json_error(code: &str, message: &str) -> Fault {
    Fault::Status {
        status: 400,
        retry_after: None,
        body: serde_json::json!({"__type": code, "message": message}).to_string(),
    }
}

/// Builds an AWS query-protocol error response.
pub fn query_error(status: u16, code: &str, message: &str) -> Fault {
    Fault::Status {
        status,
        retry_after: None,
        body: format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>keywheel-test</RequestId></ErrorResponse>"
        ),
    }
}
