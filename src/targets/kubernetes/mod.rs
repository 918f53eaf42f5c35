//! The `kubernetes` target: keys of a Secret, in one namespace or many, and
//! optional restarts of the workloads that read it.
//!
//! ```yaml
//! - name: app-secret
//!   type: kubernetes
//!   namespaces: [team-a, team-b]   # or namespace: NAME, or
//!                                  # namespace_selector: LABEL=VALUE
//!   secret_name: app-credentials
//!   set:
//!     API_KEY: secret              # Secret data key <- key field
//!   kubeconfig_env: KUBECONFIG_PATH  # variable holding a kubeconfig path
//!   context: prod                  # kubeconfig context (default: current)
//!   create: false                  # create the Secret or add missing keys
//!   restart:                       # after every push, then wait
//!     - deployment/web             # in every namespace of the target
//!     - workload: statefulset/db
//!       namespace: team-b          # only there
//!   rollout_timeout: 5m
//!   timeout: 30s                   # of each API request
//! ```
//!
//! Without `kubeconfig_env` and `context`, the cluster comes from
//! `KUBECONFIG` or `~/.kube/config`, and from the pod's service account when
//! there is neither.
//!
//! With `namespaces` or `namespace_selector`, each namespace is a target of
//! its own, named `NAME/NAMESPACE`, with its own journaled push and restore.
//! A selector is evaluated when a run starts; `resume` and `rollback` use the
//! namespaces journaled at preflight.
//!
//! Values are written to `data` as the exact bytes of the key field, never
//! to `stringData`. Other keys, labels and annotations are kept. Every
//! update carries the resourceVersion it was read at. On 409 Conflict the
//! Secret is read again and only the managed keys are applied again, a
//! bounded number of times (see [`secret`]). Restarts set an annotation on
//! each workload's pod template and wait for the rollout (see [`rollout`]).

mod client;
mod rollout;
mod secret;
pub mod spec;

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;

use super::{Receipt, Selection, Snapshot, Target, TargetCx, TargetError, mapped_values};
use crate::key::Key;
use crate::retry::RetryPolicy;
use client::{Connection, Object};
use secret::{SecretState, Values};
pub use spec::KubernetesSpec;
use spec::{NamespaceChoice, WorkloadRef};

/// One Secret in one namespace.
pub struct KubernetesTarget {
    name: String,
    namespace: String,
    spec: Arc<KubernetesSpec>,
    connection: Connection,
    /// The workloads of this namespace that `restart` restarts.
    restarts: Vec<WorkloadRef>,
}

/// Builds one target per namespace of `spec`. Namespaces named by a
/// selector are listed from the cluster, unless `selection` gives the
/// journaled targets. Errors name the spec field concerned.
pub async fn build(
    name: &str,
    spec: &KubernetesSpec,
    selection: &Selection<'_>,
) -> Result<Vec<KubernetesTarget>, (&'static str, String)> {
    let connection = client::connect(&spec.access, spec.timeout).await?;
    let namespaces: Vec<String> = match (&spec.namespaces, selection) {
        (NamespaceChoice::One(namespace), _) => vec![namespace.clone()],
        (NamespaceChoice::List(_) | NamespaceChoice::Selector(_), Selection::Journaled(names)) => {
            let prefix = format!("{name}/");
            names
                .iter()
                .filter_map(|journaled| journaled.strip_prefix(&prefix))
                .map(str::to_string)
                .collect()
        }
        (NamespaceChoice::List(list), Selection::Current) => list.clone(),
        (NamespaceChoice::Selector(selector), Selection::Current) => {
            select_namespaces(&connection, selector).await?
        }
    };
    if let NamespaceChoice::Selector(selector) = &spec.namespaces
        && let Selection::Current = selection
    {
        for restart in &spec.restart {
            if let Some(namespace) = &restart.namespace
                && !namespaces.contains(namespace)
            {
                return Err((
                    "restart",
                    format!(
                        "{} is to be restarted in namespace {namespace}, which namespace_selector {selector:?} does not match",
                        restart.workload
                    ),
                ));
            }
        }
    }

    let spec = Arc::new(spec.clone());
    let fan_out = !matches!(spec.namespaces, NamespaceChoice::One(_));
    Ok(namespaces
        .into_iter()
        .map(|namespace| KubernetesTarget {
            name: if fan_out {
                format!("{name}/{namespace}")
            } else {
                name.to_string()
            },
            restarts: spec
                .restart
                .iter()
                .filter(|r| r.namespace.as_ref().is_none_or(|n| *n == namespace))
                .map(|r| r.workload.clone())
                .collect(),
            namespace,
            spec: spec.clone(),
            connection: connection.clone(),
        })
        .collect())
}

/// Lists the namespaces whose labels match `selector`, sorted by name.
async fn select_namespaces(
    connection: &Connection,
    selector: &str,
) -> Result<Vec<String>, (&'static str, String)> {
    let api: kube::Api<Namespace> = kube::Api::all(connection.client.clone());
    let params = ListParams::default().labels(selector);
    let list = client::call(
        &RetryPolicy::default(),
        connection.timeout,
        "kubernetes namespace list",
        || api.list(&params),
    )
    .await
    .map_err(|err| {
        let object = Object {
            resource: "namespaces",
            namespace: "",
            name: "",
        };
        (
            "namespace_selector",
            format!(
                "cannot list namespaces matching {selector:?} at {}: {}",
                connection.server,
                client::target_error(err, "list", &object)
            ),
        )
    })?;
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|namespace| namespace.metadata.name)
        .collect();
    names.sort();
    if names.is_empty() {
        return Err((
            "namespace_selector",
            format!(
                "no namespace at {} matches {selector:?}; label the namespaces or fix the selector",
                connection.server
            ),
        ));
    }
    Ok(names)
}

impl KubernetesTarget {
    fn secret_object(&self) -> Object<'_> {
        Object {
            resource: "secrets",
            namespace: &self.namespace,
            name: &self.spec.secret_name,
        }
    }

    /// `namespace/name`, for messages.
    fn secret_display(&self) -> String {
        format!("{}/{}", self.namespace, self.spec.secret_name)
    }

    /// Collects the new values of the managed keys from `key`.
    fn desired(&self, key: &Key) -> Result<Values, TargetError> {
        Ok(mapped_values(key, &self.spec.set)?.into_iter().collect())
    }
}

#[async_trait]
impl Target for KubernetesTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        format!(
            "kubernetes {} secret {} ({})",
            self.connection.server.trim_end_matches('/'),
            self.secret_display(),
            self.spec.set.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }

    fn previous_fields(&self, snapshot: &Snapshot) -> crate::targets::HeldFields {
        let Ok(previous) = secret::decode_values(&snapshot.previous) else {
            return Default::default();
        };
        self.spec
            .set
            .iter()
            .filter_map(|(key, field)| {
                previous
                    .get(key)
                    .map(|value| (field.clone(), value.clone()))
            })
            .collect()
    }

    fn restarts(&self) -> Vec<String> {
        self.restarts
            .iter()
            .map(|workload| format!("{workload} in namespace {}", self.namespace))
            .collect()
    }

    fn restart_wait(&self) -> std::time::Duration {
        self.spec.rollout_timeout
    }

    async fn preflight(&self, cx: &TargetCx) -> Result<Snapshot, TargetError> {
        let found = self.read_secret(cx).await?;
        let restarts = self.check_restarts(cx).await?;
        let (state, previous, mut summary) = self.inspect(found.as_ref())?;
        if !restarts.is_empty() {
            summary.push_str(&format!("; restarts {}", restarts.join(", ")));
        }
        Ok(Snapshot {
            state: serde_json::to_value(&state).unwrap_or_default(),
            previous: secret::encode_values(&previous),
            summary,
        })
    }

    async fn push(
        &self,
        cx: &TargetCx,
        snapshot: &Snapshot,
        key: &Key,
    ) -> Result<Receipt, TargetError> {
        let (state, previous) = parse_snapshot(snapshot)?;
        self.push_values(cx, &state, &previous, &self.desired(key)?)
            .await
    }

    async fn restore(
        &self,
        cx: &TargetCx,
        snapshot: &Snapshot,
        key: &Key,
    ) -> Result<Receipt, TargetError> {
        let (state, previous) = parse_snapshot(snapshot)?;
        self.restore_values(cx, &state, &previous, &self.desired(key)?)
            .await
    }

    async fn restart(&self, cx: &TargetCx, marker: &str) -> Result<Receipt, TargetError> {
        self.restart_workloads(cx, marker).await
    }
}

fn parse_snapshot(snapshot: &Snapshot) -> Result<(SecretState, Values), TargetError> {
    let state: SecretState = serde_json::from_value(snapshot.state.clone()).map_err(|err| {
        TargetError::InvalidResponse(format!("journaled kubernetes state is invalid: {err}"))
    })?;
    let previous = secret::decode_values(&snapshot.previous)?;
    Ok((state, previous))
}
