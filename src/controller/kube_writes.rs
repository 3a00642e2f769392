//! [`Writes`] against the API server.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::mpsc;

use super::writes::Writes;
use crate::api::PatchPolicy;
use crate::metrics::ControllerMetrics;

const FIELD_MANAGER: &str = "sofort-controller";

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Events waiting to be published, at most. Events are best effort: one
/// more than this is dropped (and counted), so a slow API server costs a
/// bounded queue, not a task and its memory per Event.
pub(crate) const EVENT_QUEUE: usize = 1024;

/// Events published at the same time, at most.
const EVENT_CONCURRENCY: usize = 8;

/// Events after which the publisher starts a fresh [`Recorder`]. A Recorder
/// remembers every Event it sent for six minutes, to fold a repeat into the
/// first one's series, and walks all it remembers on each publish; a rollout
/// of thousands of nodes sends tens of thousands in that time. Each
/// remembered Event takes about 2 KiB, and the map never shrinks: at 4,096
/// it was the largest single item of a 5,000-node rollout's peak heap
/// (17.7 MiB). 512 cover six minutes of a rollout that sends fewer than 1.4
/// Events a second (100 nodes in flight, each taking minutes); a repeat
/// right after the swap starts a new series.
pub(crate) const RECORDER_EVENTS: usize = 512;

/// The controller's writes through a kube [`Client`].
pub(crate) struct KubeWrites {
    nodes: Api<Node>,
    /// PatchPolicies as raw objects: for writes whose answer need not decode.
    raw_policies: Api<DynamicObject>,
    events: mpsc::Sender<(ObjectReference, Event)>,
    metrics: ControllerMetrics,
}

impl KubeWrites {
    /// Writes through `client`; Events are reported as `identity` by a
    /// publisher task that runs as long as this value lives.
    pub(crate) fn new(client: Client, identity: &str, metrics: ControllerMetrics) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.to_string()),
        };
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let nodes = Api::all(client.clone());
        let raw_policies = Api::all_with(client.clone(), &ApiResource::erase::<PatchPolicy>(&()));
        let recorders = move || Recorder::new(client.clone(), reporter.clone());
        tokio::spawn(publish_events(
            rx,
            recorders,
            RECORDER_EVENTS,
            metrics.clone(),
        ));
        KubeWrites {
            nodes,
            raw_policies,
            events,
            metrics,
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
        if self.events.try_send((reference, event)).is_err() {
            self.metrics.count_event("dropped");
            tracing::debug!("Event dropped: {EVENT_QUEUE} are already waiting to be published");
        }
    }
}

/// Publishes the queued Events, [`EVENT_CONCURRENCY`] at a time, with a
/// fresh Recorder from `recorders` every `fresh_every` Events
/// ([`RECORDER_EVENTS`]). Ends when the sender is dropped.
async fn publish_events(
    rx: mpsc::Receiver<(ObjectReference, Event)>,
    recorders: impl Fn() -> Recorder,
    fresh_every: usize,
    metrics: ControllerMetrics,
) {
    let queued = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut recorder = recorders();
    let mut sent = 0usize;
    queued
        .map(|(reference, event)| {
            if sent == fresh_every {
                recorder = recorders();
                sent = 0;
            }
            sent += 1;
            let recorder = recorder.clone();
            async move { recorder.publish(&event, &reference).await }
        })
        .buffer_unordered(EVENT_CONCURRENCY)
        .for_each(|result| {
            match result {
                Ok(()) => metrics.count_event("published"),
                Err(e) => {
                    metrics.count_event("failed");
                    tracing::debug!(error = %e, "cannot publish Event");
                }
            }
            async {}
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use kube::runtime::events::EventType;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mock() -> (Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), handle)
    }

    fn note(text: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "Cordoned".into(),
            note: Some(text.into()),
            action: "Cordon".into(),
            secondary: None,
        }
    }

    fn counted(metrics: &ControllerMetrics, result: &str) -> u64 {
        let line = format!("sofort_events_total{{result=\"{result}\"}} ");
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&line).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Answers one request with its own body (an Event, created or
    /// patched) and returns its method.
    async fn answer(handle: &mut Handle) -> http::Method {
        let Some((req, send)) = handle.next_request().await else {
            panic!("the publisher sent no request");
        };
        let method = req.method().clone();
        let body = match req.into_body().collect_bytes().await {
            Ok(b) => b,
            Err(e) => panic!("request body: {e}"),
        };
        let status = if method == http::Method::POST {
            201
        } else {
            200
        };
        let resp = Response::builder()
            .status(status)
            .body(Body::from(body.to_vec()));
        match resp {
            Ok(r) => send.send_response(r),
            Err(e) => panic!("response: {e}"),
        }
        method
    }

    // Paused time: the minute of waiting for a ninth request passes at once.
    #[tokio::test(start_paused = true)]
    async fn events_beyond_the_queue_are_dropped_and_counted_and_few_are_in_flight() {
        let (client, mut handle) = mock();
        let metrics = ControllerMetrics::new();
        let writes = KubeWrites::new(client, "test", metrics.clone());
        // Nothing runs the publisher before this test yields, so the queue
        // fills exactly.
        for i in 0..EVENT_QUEUE + 10 {
            writes.publish(
                super::super::events::node_ref("w-1"),
                note(&format!("n{i}")),
            );
        }
        assert_eq!(counted(&metrics, "dropped"), 10);
        // The server does not answer: only EVENT_CONCURRENCY are sent.
        let mut held = Vec::new();
        for _ in 0..EVENT_CONCURRENCY {
            match handle.next_request().await {
                Some(r) => held.push(r),
                None => panic!("the publisher stopped"),
            }
        }
        let more =
            tokio::time::timeout(std::time::Duration::from_secs(60), handle.next_request()).await;
        assert!(
            more.is_err(),
            "a ninth Event went out while eight were unanswered"
        );
        // One answer lets one more go.
        let Some((req, send)) = held.pop() else {
            panic!("held requests")
        };
        let body = match req.into_body().collect_bytes().await {
            Ok(b) => b,
            Err(e) => panic!("request body: {e}"),
        };
        match Response::builder()
            .status(201)
            .body(Body::from(body.to_vec()))
        {
            Ok(r) => send.send_response(r),
            Err(e) => panic!("response: {e}"),
        }
        assert!(handle.next_request().await.is_some());
        // Queued, not dropped, since the queue had room again.
        writes.publish(super::super::events::node_ref("w-1"), note("later"));
        assert_eq!(counted(&metrics, "dropped"), 10);
    }

    #[tokio::test]
    async fn a_fresh_recorder_after_its_event_count_starts_a_new_series() {
        let (client, mut handle) = mock();
        let metrics = ControllerMetrics::new();
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some("test".into()),
        };
        let recorders = move || Recorder::new(client.clone(), reporter.clone());
        tokio::spawn(publish_events(rx, recorders, 3, metrics.clone()));
        let mut methods = Vec::new();
        for _ in 0..4 {
            // The same Event about the same Node, one after the other.
            assert!(
                tx.send((super::super::events::node_ref("w-1"), note("same")))
                    .await
                    .is_ok()
            );
            methods.push(answer(&mut handle).await);
        }
        use http::Method;
        assert_eq!(
            methods,
            [Method::POST, Method::PATCH, Method::PATCH, Method::POST]
        );
        // Counted once the answers are in.
        for _ in 0..100 {
            if counted(&metrics, "published") == 4 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(counted(&metrics, "published"), 4);
    }
}
