//! Clients that the targets of one playbook share.
//!
//! Targets whose client settings are equal get the same client. Building
//! one costs milliseconds, because reqwest and the AWS SDK each load the
//! system's root certificates for it, and every client keeps its own pool
//! of connections. With hundreds of targets, sharing saves a noticeable
//! part of a run's start-up and memory, and lets targets on one server
//! reuse each other's connections.
//!
//! One cache serves one build of a playbook's targets, so a client is only
//! used by the tokio runtime of the run that built it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use tokio::sync::OnceCell;

use crate::aws::AwsSettings;

/// The shared clients of one build of a playbook's targets.
#[derive(Default)]
pub struct SharedClients {
    http: Mutex<Vec<(HttpSettings, reqwest::Client)>>,
    aws: Mutex<Vec<(AwsSettings, Arc<OnceCell<SdkConfig>>)>>,
}

/// Settings that distinguish one HTTP client of the Vault targets from
/// another.
#[derive(PartialEq)]
struct HttpSettings {
    ca_pem: Option<Vec<u8>>,
    timeout: Duration,
}

impl SharedClients {
    /// Returns the HTTP client for a CA certificate and a timeout, calling
    /// `build` only for settings seen for the first time.
    pub fn http(
        &self,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
        build: impl FnOnce() -> Result<reqwest::Client, String>,
    ) -> Result<reqwest::Client, String> {
        let settings = HttpSettings {
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            timeout,
        };
        let mut clients = self.http.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, client)) = clients.iter().find(|(known, _)| *known == settings) {
            return Ok(client.clone());
        }
        let client = build()?;
        clients.push((settings, client.clone()));
        Ok(client)
    }

    /// Returns the cell for the SDK configuration of `settings`, which the
    /// first target to call AWS fills.
    pub fn aws_config(&self, settings: &AwsSettings) -> Arc<OnceCell<SdkConfig>> {
        let mut configs = self.aws.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, cell)) = configs.iter().find(|(known, _)| known == settings) {
            return cell.clone();
        }
        let cell = Arc::new(OnceCell::new());
        configs.push((settings.clone(), cell.clone()));
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .build()
            .map_err(|err| err.to_string())
    }

    #[test]
    fn equal_http_settings_build_once() {
        let shared = SharedClients::default();
        let mut builds = 0;
        for _ in 0..3 {
            shared
                .http(None, Duration::from_secs(30), || {
                    builds += 1;
                    client()
                })
                .unwrap();
        }
        shared
            .http(Some(b"pem"), Duration::from_secs(30), || {
                builds += 1;
                client()
            })
            .unwrap();
        shared
            .http(None, Duration::from_secs(5), || {
                builds += 1;
                client()
            })
            .unwrap();
        assert_eq!(builds, 3);
    }

    #[test]
    fn equal_aws_settings_share_a_cell() {
        let shared = SharedClients::default();
        let spec = crate::aws::AwsSpec {
            region: Some("us-east-1".into()),
            ..crate::aws::AwsSpec::default()
        };
        let first = shared.aws_config(&spec.resolve().unwrap());
        let second = shared.aws_config(&spec.resolve().unwrap());
        let other = crate::aws::AwsSpec {
            region: Some("eu-west-1".into()),
            ..spec
        };
        let third = shared.aws_config(&other.resolve().unwrap());
        assert!(Arc::ptr_eq(&first, &second));
        assert!(!Arc::ptr_eq(&first, &third));
    }
}
