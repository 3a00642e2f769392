//! [`Writes`] against the API server.

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::Value;

use super::writes::Writes;
use crate::api::PatchPolicy;

const FIELD_MANAGER: &str = "sofort-controller";

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// The controller's writes through a kube [`Client`].
pub(crate) struct KubeWrites {
    nodes: Api<Node>,
    /// PatchPolicies as raw objects: for writes whose answer need not decode.
    raw_policies: Api<DynamicObject>,
    recorder: Recorder,
}

impl KubeWrites {
    /// Writes through `client`; Events are reported as `identity`.
    pub(crate) fn new(client: Client, identity: &str) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity.to_string()),
            },
        );
        KubeWrites {
            nodes: Api::all(client.clone()),
            raw_policies: Api::all_with(client, &ApiResource::erase::<PatchPolicy>(&())),
            recorder,
        }
    }
}

impl Writes for KubeWrites {
    async fn patch_node(&self, node: &str, patch: Value) -> Result<Node, kube::Error> {
        self.nodes
            .patch(node, &params(), &Patch::Merge(patch))
            .await
    }

    async fn patch_status(
        &self,
        policy: &str,
        patch: Value,
    ) -> Result<Option<String>, kube::Error> {
        let written = self
            .raw_policies
            .patch_status(policy, &params(), &Patch::Merge(patch))
            .await?;
        Ok(written.metadata.resource_version)
    }

    async fn patch_policy(&self, policy: &str, patch: Value) -> Result<(), kube::Error> {
        self.raw_policies
            .patch(policy, &params(), &Patch::Merge(patch))
            .await
            .map(|_| ())
    }

    fn publish(&self, reference: ObjectReference, event: Event) {
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "cannot publish Event");
            }
        });
    }
}
