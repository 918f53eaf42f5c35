//! Settings and error handling shared by the `aws_secret` target and the
//! `aws_iam` issuer.
//!
//! ```yaml
//! region: eu-west-1                  # default: the standard AWS chain
//! profile: rotation                  # default: the standard AWS chain
//! endpoint_url_env: AWS_ENDPOINT_URL # a variable holding an endpoint URL
//! timeout: 30s                       # per HTTP attempt
//! ```
//!
//! Credentials always come from the standard AWS chain (environment,
//! profile, SSO, web identity, container and instance roles). A playbook
//! never contains them. The SDK's own retries are turned off so that every
//! call goes through [`crate::retry`] and is classified by its AWS error
//! code (see [`error`]).

pub mod error;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::playbook::decode::{Cx, MapReader};

pub use error::{AwsError, Idempotency, call};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Playbook fields that are credentials, which belong in the standard chain.
const CREDENTIAL_FIELDS: &[&str] = &["access_key_id", "secret_access_key", "session_token"];

/// Where and how to reach AWS, as the playbook sets it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AwsSpec {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Name of an environment variable holding an endpoint URL. Without it
    /// the SDK reads `AWS_ENDPOINT_URL` and the profile's `endpoint_url`.
    pub endpoint_url_env: Option<String>,
    /// Timeout of each HTTP attempt.
    pub timeout: Duration,
}

impl AwsSpec {
    /// Reads the shared AWS fields of a target or issuer mapping.
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Self {
        let region = reader.optional::<String>("region", cx);
        if let (Some(node), Some(region)) = (reader.value("region"), &region)
            && !is_region_name(region)
        {
            cx.error_hint(
                node,
                &reader.path_of("region"),
                format!("invalid AWS region {region:?}"),
                "write a region code such as us-east-1",
            );
        }
        for field in CREDENTIAL_FIELDS {
            if let Some(node) = reader.value(field) {
                cx.error_hint(
                    node,
                    &reader.path_of(field),
                    format!("`{field}` cannot be written in a playbook"),
                    "keywheel takes AWS credentials from the standard chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, SSO or a role",
                );
            }
        }
        if let Some(node) = reader.value("endpoint_url") {
            cx.error_hint(
                node,
                &reader.path_of("endpoint_url"),
                "`endpoint_url` cannot be written in a playbook",
                "put the URL in an environment variable and name it in `endpoint_url_env`, or set AWS_ENDPOINT_URL",
            );
        }
        Self {
            region,
            profile: reader.optional("profile", cx),
            endpoint_url_env: reader.optional("endpoint_url_env", cx),
            timeout: reader.optional("timeout", cx).unwrap_or(DEFAULT_TIMEOUT),
        }
    }

    /// Returns the schema of the fields [`AwsSpec::decode`] reads.
    pub fn schema_properties() -> Vec<(&'static str, serde_json::Value)> {
        use crate::playbook::schema::{duration, env_name, rejected};
        let region = serde_json::json!({
            "description": "AWS region, such as us-east-1 (default: the standard AWS chain).",
            "type": "string",
            "pattern": "^[a-z][a-z0-9-]{0,31}$",
        });
        let profile = serde_json::json!({
            "description": "A profile of the shared AWS config files (default: the standard AWS chain).",
            "type": "string",
        });
        let mut properties = vec![
            ("region", region),
            ("profile", profile),
            (
                "endpoint_url_env",
                env_name(
                    "Environment variable holding an endpoint URL, for emulators; without \
                     it the SDK reads AWS_ENDPOINT_URL.",
                    None,
                ),
            ),
            (
                "timeout",
                duration("Timeout of each HTTP attempt.", Some(DEFAULT_TIMEOUT)),
            ),
        ];
        let credential = rejected(
            "Never written in a playbook: keywheel takes AWS credentials from the \
             standard chain (environment, profile, SSO, a role).",
        );
        for field in CREDENTIAL_FIELDS {
            properties.push((field, credential.clone()));
        }
        properties.push((
            "endpoint_url",
            rejected("Never written in a playbook: name a variable in `endpoint_url_env`."),
        ));
        properties
    }

    /// Reads the environment variable the spec names. Errors name the
    /// playbook field concerned.
    pub fn resolve(&self) -> Result<AwsSettings, (&'static str, String)> {
        let endpoint = match &self.endpoint_url_env {
            None => None,
            Some(name) => {
                let text = std::env::var(name).map_err(|_| {
                    ("endpoint_url_env", format!(
                        "environment variable {name} is not set; export the endpoint URL in it (for example http://127.0.0.1:5000) or remove endpoint_url_env"
                    ))
                })?;
                let url = url::Url::parse(text.trim())
                    .ok()
                    .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
                    .ok_or_else(|| {
                        (
                            "endpoint_url_env",
                            format!(
                                "{name} holds {text:?}, which is not an http:// or https:// URL"
                            ),
                        )
                    })?;
                Some(url)
            }
        };
        Ok(AwsSettings {
            spec: self.clone(),
            endpoint,
        })
    }
}

fn is_region_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 32
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An [`AwsSpec`] with its environment read, ready to load an SDK config.
#[derive(Clone, Debug, PartialEq)]
pub struct AwsSettings {
    spec: AwsSpec,
    endpoint: Option<url::Url>,
}

impl AwsSettings {
    /// Loads the SDK configuration: region, credentials chain, endpoint.
    /// Credentials are resolved later, on the first call.
    pub async fn load(&self) -> Result<SdkConfig, AwsError> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(self.spec.timeout))
            .operation_attempt_timeout(self.spec.timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(region) = &self.spec.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &self.spec.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint.as_str().trim_end_matches('/'));
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(AwsError::setup(
                "no AWS region is configured; set `region` in the playbook, or AWS_REGION, or a region in the AWS profile",
            ));
        }
        Ok(config)
    }

    /// Describes the region and endpoint, for locations and messages.
    pub fn describe(&self) -> String {
        let region = self.spec.region.as_deref().unwrap_or("the default region");
        match &self.endpoint {
            Some(url) => format!("{region} at {}", url.as_str().trim_end_matches('/')),
            None => region.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_checked() {
        assert!(is_region_name("us-east-1"));
        assert!(is_region_name("cn-northwest-1"));
        assert!(!is_region_name("US-EAST-1"));
        assert!(!is_region_name("us east 1"));
        assert!(!is_region_name(""));
    }
}
