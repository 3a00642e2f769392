//! The controller's writes to the cluster, behind one small trait: the
//! reconcile decides and builds every patch and Event text itself
//! ([`super::patches`], [`super::events`]) and hands them to a [`Writes`].
//! [`super::kube_writes::KubeWrites`] is the implementation against the API
//! server; the reconcile tests use a fake that records the writes and answers
//! as scripted.

use std::future::Future;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::runtime::events::Event;
use serde_json::Value;

/// Writes of the controller's decision loop. Every patch is a JSON merge
/// patch; a `metadata.resourceVersion` in it makes it conditional (409 when
/// the object changed).
pub(crate) trait Writes: Send + Sync + 'static {
    /// Patches a Node; the answer is the Node as stored.
    fn patch_node(
        &self,
        node: &str,
        patch: Value,
    ) -> impl Future<Output = Result<Node, kube::Error>> + Send;

    /// Patches a PatchPolicy's status subresource; the answer is the
    /// resourceVersion it was stored with.
    fn patch_status(
        &self,
        policy: &str,
        patch: Value,
    ) -> impl Future<Output = Result<Option<String>, kube::Error>> + Send;

    /// Patches a PatchPolicy's metadata (its finalizers). The answer is not
    /// decoded: the object may be one the types cannot hold.
    fn patch_policy(
        &self,
        policy: &str,
        patch: Value,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;

    /// Publishes an Event about `reference` in the background (a failure is
    /// logged, never retried: Events are best effort).
    fn publish(&self, reference: ObjectReference, event: Event);
}
