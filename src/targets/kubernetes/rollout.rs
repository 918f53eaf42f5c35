//! Restarting the workloads that read a Secret, and confirming the rollout.
//!
//! A restart sets the annotation [`RESTART_ANNOTATION`] on the workload's pod
//! template to a marker the engine makes unique to the run, the target and
//! the step, as `kubectl rollout restart` does with its own annotation. A
//! changed template starts a rollout. Setting the same marker again changes
//! nothing, so a restart repeated after a crash starts no second rollout and
//! only waits for the first.
//!
//! A rollout is complete when the controller has observed the new
//! generation and every desired pod is updated, ready and available, with no
//! old pod left. For a Deployment, counting updated pods alone is not
//! enough: with one replica, a new pod that never becomes ready already
//! gives `updatedReplicas == spec.replicas` while the old pod keeps serving.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::KubernetesTarget;
use super::client::{self, Object};
use super::spec::{WorkloadKind, WorkloadRef};
use crate::playbook::decode::format_duration;
use crate::targets::{Receipt, TargetCx, TargetError};

/// The pod template annotation a restart sets.
pub const RESTART_ANNOTATION: &str = "keywheel.io/restart";

/// First and longest pause between two reads of a rollout's status.
const FIRST_POLL: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_secs(2);

/// The progress of a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    Complete,
    /// In progress; the text names what it waits for.
    Waiting(String),
    /// The controller gave up.
    Failed(String),
}

/// A workload as read from the API server.
enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
}

impl Workload {
    /// Explains why a template change would not restart the pods, or
    /// returns `None` when it would.
    fn not_restartable(&self) -> Option<&'static str> {
        match self {
            Self::Deployment(d) if d.spec.paused == Some(true) => {
                Some("is paused, so a template change starts no rollout; resume it first")
            }
            Self::StatefulSet(s) => {
                let strategy = s.spec.update_strategy.as_ref();
                let partition = strategy
                    .and_then(|u| u.rolling_update.as_ref())
                    .and_then(|r| r.partition)
                    .unwrap_or(0);
                if strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete") {
                    Some("uses the OnDelete update strategy, so its pods restart only when deleted")
                } else if partition > 0 {
                    Some(
                        "has a rolling update partition, so pods below it would keep the old value",
                    )
                } else {
                    None
                }
            }
            Self::DaemonSet(d) => {
                let strategy = d.spec.update_strategy.as_ref();
                (strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete")).then_some(
                    "uses the OnDelete update strategy, so its pods restart only when deleted",
                )
            }
            _ => None,
        }
    }

    fn rollout(&self) -> Rollout {
        match self {
            Self::Deployment(d) => deployment_rollout(d),
            Self::StatefulSet(s) => statefulset_rollout(s),
            Self::DaemonSet(d) => daemonset_rollout(d),
        }
    }
}

/// Describes the first check whose count is below the wanted one, if any.
fn first_shortfall(checks: &[(i64, i64, &str)]) -> Option<String> {
    checks
        .iter()
        .find(|(have, want, _)| have < want)
        .map(|(have, want, what)| format!("{have} of {want} {what}"))
}

fn observed(generation: Option<i64>, observed: Option<i64>) -> Option<String> {
    let generation = generation.unwrap_or(0);
    let observed = observed.unwrap_or(0);
    (observed < generation).then(|| {
        format!("the controller has not observed generation {generation} yet (observed {observed})")
    })
}

/// Checks a Deployment as `kubectl rollout status` does, and also requires
/// every pod ready and no old pod left.
pub fn deployment_rollout(deployment: &Deployment) -> Rollout {
    let status = deployment.status.clone().unwrap_or_default();
    if let Some(waiting) = observed(deployment.metadata.generation, status.observed_generation) {
        return Rollout::Waiting(waiting);
    }

    let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if deadline_exceeded {
        return Rollout::Failed(
            "its progress deadline was exceeded (condition Progressing: ProgressDeadlineExceeded)"
                .into(),
        );
    }

    let want = i64::from(deployment.spec.replicas.unwrap_or(1));
    let updated = i64::from(status.updated_replicas.unwrap_or(0));
    let ready = i64::from(status.ready_replicas.unwrap_or(0));
    let available = i64::from(status.available_replicas.unwrap_or(0));
    let checks = [
        (updated, want, "pods updated"),
        (ready, want, "pods ready"),
        (available, want, "pods available"),
    ];
    if let Some(short) = first_shortfall(&checks) {
        return Rollout::Waiting(short);
    }

    // Old pods still count in `replicas` while they run, ready or not.
    let pods = i64::from(status.replicas.unwrap_or(0));
    if pods > updated {
        return Rollout::Waiting(format!("{} old pod(s) still running", pods - updated));
    }
    match status.unavailable_replicas.unwrap_or(0) {
        0 => Rollout::Complete,
        unavailable => Rollout::Waiting(format!("{unavailable} pod(s) unavailable")),
    }
}

/// Checks a StatefulSet: every pod updated, ready and available, and the
/// current revision the update revision.
pub fn statefulset_rollout(statefulset: &StatefulSet) -> Rollout {
    let status = statefulset.status.clone().unwrap_or_default();
    if let Some(waiting) = observed(statefulset.metadata.generation, status.observed_generation) {
        return Rollout::Waiting(waiting);
    }
    let want = i64::from(statefulset.spec.replicas.unwrap_or(1));
    let checks = [
        (
            i64::from(status.updated_replicas.unwrap_or(0)),
            want,
            "pods updated",
        ),
        (
            i64::from(status.ready_replicas.unwrap_or(0)),
            want,
            "pods ready",
        ),
        (
            i64::from(status.available_replicas.unwrap_or(0)),
            want,
            "pods available",
        ),
    ];
    if let Some(short) = first_shortfall(&checks) {
        return Rollout::Waiting(short);
    }
    if status.current_revision != status.update_revision {
        return Rollout::Waiting(format!(
            "current revision {} is not yet update revision {}",
            status.current_revision.unwrap_or_default(),
            status.update_revision.unwrap_or_default()
        ));
    }
    Rollout::Complete
}

/// Checks a DaemonSet: an updated, ready and available pod on every node
/// that should run one.
pub fn daemonset_rollout(daemonset: &DaemonSet) -> Rollout {
    let status = daemonset.status.clone().unwrap_or_default();
    if let Some(waiting) = observed(daemonset.metadata.generation, status.observed_generation) {
        return Rollout::Waiting(waiting);
    }
    let want = i64::from(status.desired_number_scheduled);
    let checks = [
        (
            i64::from(status.updated_number_scheduled.unwrap_or(0)),
            want,
            "nodes run an updated pod",
        ),
        (i64::from(status.number_ready), want, "pods ready"),
        (
            i64::from(status.number_available.unwrap_or(0)),
            want,
            "pods available",
        ),
    ];
    if let Some(short) = first_shortfall(&checks) {
        return Rollout::Waiting(short);
    }
    match status.number_unavailable.unwrap_or(0) {
        0 => Rollout::Complete,
        unavailable => Rollout::Waiting(format!("{unavailable} pod(s) unavailable")),
    }
}

impl KubernetesTarget {
    fn workload_object<'a>(&'a self, workload: &'a WorkloadRef) -> Object<'a> {
        Object {
            resource: workload.kind.resource(),
            namespace: &self.namespace,
            name: &workload.name,
        }
    }

    async fn read_workload(
        &self,
        cx: &TargetCx,
        workload: &WorkloadRef,
    ) -> Result<Workload, TargetError> {
        let result = match workload.kind {
            WorkloadKind::Deployment => {
                self.get(cx, &workload.name).await.map(Workload::Deployment)
            }
            WorkloadKind::StatefulSet => self
                .get(cx, &workload.name)
                .await
                .map(Workload::StatefulSet),
            WorkloadKind::DaemonSet => self.get(cx, &workload.name).await.map(Workload::DaemonSet),
        };
        result.map_err(|err| {
            if err.is_not_found() {
                return TargetError::Misconfigured(format!(
                    "{workload} not found in namespace {}; fix `restart` or create it",
                    self.namespace
                ));
            }
            client::target_error(err, "get", &self.workload_object(workload))
        })
    }

    async fn get<K>(&self, cx: &TargetCx, name: &str) -> Result<K, client::CallError>
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let api: kube::Api<K> =
            kube::Api::namespaced(self.connection.client.clone(), &self.namespace);
        client::call(
            &cx.retry,
            self.connection.timeout,
            "kubernetes workload read",
            || api.get(name),
        )
        .await
    }

    /// Checks at preflight that every workload to restart exists and would
    /// roll out on a template change. Returns their names.
    pub(super) async fn check_restarts(&self, cx: &TargetCx) -> Result<Vec<String>, TargetError> {
        let mut names = Vec::new();
        for workload in &self.restarts {
            if let Some(why) = self.read_workload(cx, workload).await?.not_restartable() {
                return Err(TargetError::Misconfigured(format!(
                    "{workload} in namespace {} {why}",
                    self.namespace
                )));
            }
            names.push(workload.to_string());
        }
        Ok(names)
    }

    /// Sets `marker` on every workload's pod template, then waits until
    /// every rollout is complete or `rollout_timeout` has passed.
    pub(super) async fn restart_workloads(
        &self,
        cx: &TargetCx,
        marker: &str,
    ) -> Result<Receipt, TargetError> {
        for workload in &self.restarts {
            self.set_marker(cx, workload, marker).await?;
        }
        let deadline = Instant::now() + self.spec.rollout_timeout;
        for workload in &self.restarts {
            self.wait_for_rollout(cx, workload, deadline).await?;
        }
        let names: Vec<String> = self.restarts.iter().map(ToString::to_string).collect();
        Ok(Receipt {
            state: serde_json::json!({"marker": marker, "workloads": names}),
            summary: format!(
                "restarted {} in namespace {}; rollout complete",
                names.join(", "),
                self.namespace
            ),
        })
    }

    async fn set_marker(
        &self,
        cx: &TargetCx,
        workload: &WorkloadRef,
        marker: &str,
    ) -> Result<(), TargetError> {
        let patch = Patch::Merge(serde_json::json!({
            "spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: marker}}}}
        }));
        let params = PatchParams::default();
        let client = self.connection.client.clone();
        let namespace = self.namespace.as_str();
        let name = workload.name.as_str();
        let what = "kubernetes workload restart";
        let result = match workload.kind {
            WorkloadKind::Deployment => {
                let api: kube::Api<Deployment> = kube::Api::namespaced(client, namespace);
                client::call(&cx.retry, self.connection.timeout, what, || {
                    api.patch(name, &params, &patch)
                })
                .await
                .map(drop)
            }
            WorkloadKind::StatefulSet => {
                let api: kube::Api<StatefulSet> = kube::Api::namespaced(client, namespace);
                client::call(&cx.retry, self.connection.timeout, what, || {
                    api.patch(name, &params, &patch)
                })
                .await
                .map(drop)
            }
            WorkloadKind::DaemonSet => {
                let api: kube::Api<DaemonSet> = kube::Api::namespaced(client, namespace);
                client::call(&cx.retry, self.connection.timeout, what, || {
                    api.patch(name, &params, &patch)
                })
                .await
                .map(drop)
            }
        };
        result
            .map_err(|err| client::target_error(err, "patch", &self.workload_object(workload)))?;
        tracing::info!(target = %self.name, %workload, namespace, "set the restart marker");
        Ok(())
    }

    async fn wait_for_rollout(
        &self,
        cx: &TargetCx,
        workload: &WorkloadRef,
        deadline: Instant,
    ) -> Result<(), TargetError> {
        let mut pause = FIRST_POLL;
        loop {
            let why = match self.read_workload(cx, workload).await?.rollout() {
                Rollout::Complete => return Ok(()),
                Rollout::Failed(why) => {
                    return Err(TargetError::RolloutFailed(format!(
                        "the rollout of {workload} in namespace {} failed: {why}; see `kubectl -n {0} rollout status {workload}`",
                        self.namespace
                    )));
                }
                Rollout::Waiting(why) => why,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(TargetError::RolloutFailed(format!(
                    "the rollout of {workload} in namespace {} did not complete within {}: {why}; see `kubectl -n {0} rollout status {workload}`",
                    self.namespace,
                    format_duration(self.spec.rollout_timeout)
                )));
            }
            tracing::debug!(target = %self.name, %workload, waiting = %why, "rollout in progress");
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 3 / 2).min(MAX_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{
        DaemonSetStatus, DeploymentCondition, DeploymentStatus, StatefulSetStatus,
    };

    use super::*;

    fn deployment(replicas: i32, generation: i64, status: DeploymentStatus) -> Deployment {
        let mut deployment = Deployment::default();
        deployment.metadata.generation = Some(generation);
        deployment.spec.replicas = Some(replicas);
        deployment.status = Some(status);
        deployment
    }

    fn complete_status(replicas: i32, generation: i64) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(generation),
            replicas: Some(replicas),
            updated_replicas: Some(replicas),
            ready_replicas: Some(replicas),
            available_replicas: Some(replicas),
            ..DeploymentStatus::default()
        }
    }

    #[test]
    fn deployment_complete_when_all_counts_match() {
        let d = deployment(2, 3, complete_status(2, 3));
        assert_eq!(deployment_rollout(&d), Rollout::Complete);
    }

    #[test]
    fn deployment_waits_for_new_generation() {
        let d = deployment(2, 4, complete_status(2, 3));
        assert!(
            matches!(deployment_rollout(&d), Rollout::Waiting(w) if w.contains("generation 4"))
        );
    }

    #[test]
    fn stalled_single_replica_is_not_complete() {
        // One new pod that never becomes ready, the old pod still serving:
        // updated equals spec.replicas and available equals updated.
        let status = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(2),
            updated_replicas: Some(1),
            ready_replicas: Some(1),
            available_replicas: Some(1),
            unavailable_replicas: Some(1),
            ..DeploymentStatus::default()
        };
        let d = deployment(1, 2, status);
        assert!(matches!(deployment_rollout(&d), Rollout::Waiting(w) if w.contains("old pod")));
    }

    #[test]
    fn deployment_unavailable_pods_keep_waiting() {
        let mut status = complete_status(2, 1);
        status.unavailable_replicas = Some(1);
        let d = deployment(2, 1, status);
        assert!(matches!(deployment_rollout(&d), Rollout::Waiting(_)));
    }

    #[test]
    fn deployment_deadline_exceeded_fails() {
        let mut status = complete_status(1, 2);
        status.updated_replicas = Some(0);
        status.conditions = Some(vec![DeploymentCondition {
            type_: Some("Progressing".into()),
            status: Some("False".into()),
            reason: Some("ProgressDeadlineExceeded".into()),
            ..DeploymentCondition::default()
        }]);
        let d = deployment(1, 2, status);
        assert!(matches!(deployment_rollout(&d), Rollout::Failed(_)));
    }

    #[test]
    fn statefulset_waits_for_revision() {
        let mut statefulset = StatefulSet::default();
        statefulset.metadata.generation = Some(2);
        statefulset.spec.replicas = Some(2);
        let mut status = StatefulSetStatus {
            observed_generation: Some(2),
            replicas: 2,
            updated_replicas: Some(2),
            ready_replicas: Some(2),
            available_replicas: Some(2),
            current_revision: Some("db-1".into()),
            update_revision: Some("db-2".into()),
            ..StatefulSetStatus::default()
        };
        statefulset.status = Some(status.clone());
        assert!(matches!(
            statefulset_rollout(&statefulset),
            Rollout::Waiting(_)
        ));
        status.current_revision = Some("db-2".into());
        statefulset.status = Some(status);
        assert_eq!(statefulset_rollout(&statefulset), Rollout::Complete);
    }

    #[test]
    fn daemonset_needs_every_node_updated() {
        let mut daemonset = DaemonSet::default();
        daemonset.metadata.generation = Some(2);
        let mut status = DaemonSetStatus {
            observed_generation: Some(2),
            desired_number_scheduled: 3,
            current_number_scheduled: 3,
            updated_number_scheduled: Some(2),
            number_ready: 3,
            number_available: Some(3),
            ..DaemonSetStatus::default()
        };
        daemonset.status = Some(status.clone());
        assert!(matches!(daemonset_rollout(&daemonset), Rollout::Waiting(_)));
        status.updated_number_scheduled = Some(3);
        daemonset.status = Some(status);
        assert_eq!(daemonset_rollout(&daemonset), Rollout::Complete);
    }

    #[test]
    fn on_delete_statefulset_is_not_restartable() {
        let mut statefulset = StatefulSet::default();
        statefulset.spec.update_strategy =
            Some(k8s_openapi::api::apps::v1::StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            });
        assert!(
            Workload::StatefulSet(statefulset)
                .not_restartable()
                .is_some()
        );
    }
}
