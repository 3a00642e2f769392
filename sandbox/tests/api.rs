//! The API semantics, through kube::Client.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::runtime::WatchStreamExt;
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn create_get_conflicts_and_not_found() -> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await?;
    let md = &created.metadata;
    assert!(md.uid.is_some() && md.creation_timestamp.is_some() && md.resource_version.is_some());
    let err = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("not an API error")
    };
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    let err = cms.get("missing").await.unwrap_err();
    let kube::Error::Api(s) = err else { panic!() };
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "configmaps \"missing\" not found");
    // Optimistic concurrency: a stale resourceVersion is a 409 Conflict.
    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.data = Some([("k".to_string(), "fresh".to_string())].into());
    cms.replace("a", &PostParams::default(), &fresh).await?;
    stale.data = Some([("k".to_string(), "w".to_string())].into());
    let err = cms
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else { panic!() };
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    // Creating in a namespace that does not exist is a 404.
    let other: Api<ConfigMap> = Api::namespaced(env.client.clone(), "nope");
    assert!(
        other
            .create(&PostParams::default(), &cm("a", json!({})))
            .await
            .is_err()
    );
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn label_and_field_selectors() -> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &cm("web", json!({"app": "web", "tier": "front"})),
    )
    .await?;
    cms.create(&PostParams::default(), &cm("db", json!({"app": "db"})))
        .await?;
    cms.create(&PostParams::default(), &cm("plain", json!({})))
        .await?;
    let names = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            let mut v: Vec<String> = cms
                .list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.metadata.name.unwrap())
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(names("app=web").await, ["web"]);
    assert_eq!(names("app==db").await, ["db"]);
    assert_eq!(names("app!=web").await, ["db", "plain"]);
    assert_eq!(names("app in (web,db)").await, ["db", "web"]);
    assert_eq!(names("app notin (web)").await, ["db", "plain"]);
    assert_eq!(names("tier").await, ["web"]);
    assert_eq!(names("!app").await, ["plain"]);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=db"))
        .await?;
    assert_eq!(by_name.items.len(), 1);
    let not_ns: Api<ConfigMap> = Api::all(env.client.clone());
    assert_eq!(
        not_ns
            .list(&ListParams::default().fields("metadata.namespace!=default"))
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    // Unsupported field labels are refused like the real server does.
    assert!(
        cms.list(&ListParams::default().fields("data.k=v"))
            .await
            .is_err()
    );
    // Node and pod field selectors.
    let nodes: Api<Node> = Api::all(env.client.clone());
    for (n, unsched) in [("n1", true), ("n2", false)] {
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": n}, "spec": {"unschedulable": unsched}}),
                )
                .unwrap(),
            )
            .await?;
    }
    let l = nodes
        .list(&ListParams::default().fields("spec.unschedulable=false"))
        .await?;
    assert_eq!(
        l.items
            .iter()
            .map(|n| n.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        ["n2"]
    );
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    for (p, node) in [("p1", "n1"), ("p2", "n2")] {
        pods.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": p}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})).unwrap()).await?;
    }
    let l = pods
        .list(&ListParams::default().fields("spec.nodeName=n1,status.phase=Pending"))
        .await?;
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].metadata.name.as_deref(), Some("p1"));
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn pagination_with_limit_and_continue() -> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    for i in 0..7 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await?;
    }
    let mut seen = vec![];
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = cms.list(&lp).await?;
        seen.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 7);
    env.sandbox.shutdown().await;
    Ok(())
}

/// Later pages of a paged list are served at the first page's version, as
/// a real API server does: a client that lists in pages and then watches
/// from the list's version misses nothing and sees nothing twice.
#[tokio::test]
async fn every_page_of_a_list_is_served_at_the_first_pages_version()
-> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    for i in 0..6 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await?;
    }
    let first = cms.list(&ListParams::default().limit(2)).await?;
    let rv = first.metadata.resource_version.clone();
    let token = first.metadata.continue_.clone().unwrap_or_default();
    assert!(!token.is_empty());
    // Changes after the first page: one changed, one deleted, one added.
    let mut changed = cms.get("c3").await?;
    changed.data = Some([("k".to_string(), "later".to_string())].into());
    cms.replace("c3", &PostParams::default(), &changed).await?;
    cms.delete("c4", &DeleteParams::default()).await?;
    cms.create(&PostParams::default(), &cm("c9", json!({})))
        .await?;
    let mut seen = vec![];
    let mut lp = ListParams::default().limit(2).continue_token(&token);
    for _ in 0..10 {
        let page = cms.list(&lp).await?;
        assert_eq!(
            page.metadata.resource_version, rv,
            "each page at the snapshot"
        );
        for c in page.items {
            let data = c.data.and_then(|d| d.get("k").cloned());
            seen.push((c.metadata.name.unwrap_or_default(), data));
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    let v = |n: &str| (n.to_string(), Some("v".to_string()));
    assert_eq!(seen, [v("c2"), v("c3"), v("c4"), v("c5")]);
    // A fresh list shows the changes.
    let now = cms.list(&ListParams::default()).await?;
    let names: Vec<_> = now
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c5", "c9"]);
    // Once the snapshot's version is compacted, the token is 410 Expired.
    env.sandbox.compact();
    let err = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("not an API error")
    };
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_and_reports_410_when_compacted()
-> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("w1", json!({})))
        .await?;
    let rv = first
        .metadata
        .resource_version
        .clone()
        .ok_or("no resourceVersion")?;
    cms.create(&PostParams::default(), &cm("w2", json!({})))
        .await?;
    cms.delete("w1", &DeleteParams::default()).await?;
    // Resume after w1's creation: w2 ADDED then w1 DELETED.
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &rv)
        .await?
        .boxed();
    let mut got = vec![];
    while got.len() < 2 {
        match stream.try_next().await? {
            Some(WatchEvent::Added(c)) => got.push(format!("ADDED {}", c.metadata.name.unwrap())),
            Some(WatchEvent::Deleted(c)) => {
                got.push(format!("DELETED {}", c.metadata.name.unwrap()))
            }
            Some(WatchEvent::Modified(c)) => {
                got.push(format!("MODIFIED {}", c.metadata.name.unwrap()))
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(got, ["ADDED w2", "DELETED w1"]);
    // Live events arrive too.
    cms.create(&PostParams::default(), &cm("w3", json!({})))
        .await?;
    loop {
        if let Some(WatchEvent::Added(c)) = stream.try_next().await? {
            assert_eq!(c.metadata.name.as_deref(), Some("w3"));
            break;
        }
    }
    // After compaction the old version is gone: an ERROR event with 410.
    env.sandbox.compact();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &rv)
        .await?
        .boxed();
    match stream.try_next().await? {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn watcher_with_streaming_lists_and_bookmarks() -> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    cms.create(&PostParams::default(), &cm("s1", json!({"app": "x"})))
        .await?;
    let cfg = kube::runtime::watcher::Config::default()
        .labels("app=x")
        .streaming_lists();
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = kube::runtime::watcher(cms.clone(), cfg)
        .reflect(writer)
        .applied_objects();
    let handle = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await?;
    assert_eq!(reader.state().len(), 1);
    cms.create(&PostParams::default(), &cm("s2", json!({"app": "x"})))
        .await?;
    cms.create(&PostParams::default(), &cm("s3", json!({"app": "other"})))
        .await?;
    common::eventually(Duration::from_secs(5), "reflector sees s2", || {
        let r = reader.clone();
        async move { (r.state().len() == 2).then_some(()) }
    })
    .await;
    // A dropped watch is re-established by the watcher.
    env.sandbox.faults().drop_watches();
    cms.create(&PostParams::default(), &cm("s4", json!({"app": "x"})))
        .await?;
    common::eventually(
        Duration::from_secs(10),
        "reflector sees s4 after the watch dropped",
        || {
            let r = reader.clone();
            async move { (r.state().len() == 3).then_some(()) }
        },
    )
    .await;
    handle.abort();
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn every_patch_type_and_server_side_apply_conflicts() -> Result<(), Box<dyn std::error::Error>>
{
    let env = common::bare().await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}})).unwrap()).await?;
    // Merge patch.
    let n = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await?;
    assert_eq!(n.metadata.labels.unwrap()["x"], "1");
    // Strategic merge patch: taints merge by key, null removes.
    let n = nodes
        .patch("n1", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"unschedulable": true, "taints": [{"key": "b", "effect": "NoSchedule"}]}})))
        .await?;
    assert_eq!(n.spec.as_ref().unwrap().taints.as_ref().unwrap().len(), 2);
    assert_eq!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    let n = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": null}})),
        )
        .await?;
    assert_eq!(n.spec.unwrap().unschedulable, None);
    // JSON patch.
    let jp: json_patch::Patch = serde_json::from_value(
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"y": "2"}}]),
    )?;
    let n = nodes
        .patch("n1", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await?;
    assert_eq!(n.metadata.annotations.unwrap()["y"], "2");
    // Server-side apply: a second manager changing an owned field conflicts.
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let doc = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": v}});
    let created = cms
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(doc("1")))
        .await?;
    assert!(
        created
            .metadata
            .managed_fields
            .unwrap()
            .iter()
            .any(|m| m.manager.as_deref() == Some("alice")
                && m.operation.as_deref() == Some("Apply"))
    );
    let err = cms
        .patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(doc("2")))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else { panic!() };
    assert_eq!(s.code, 409);
    assert!(
        s.message.contains("conflict with \"alice\""),
        "{}",
        s.message
    );
    let forced = cms
        .patch(
            "ssa",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(doc("2")),
        )
        .await?;
    assert_eq!(forced.data.unwrap()["k"], "2");
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn status_subresource_is_isolated_and_finalizers_hold_deletion()
-> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let n = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24"}}),
            )
            .unwrap(),
        )
        .await?;
    let g1 = n.metadata.generation.ok_or("no generation")?;
    // Status change through the main resource is ignored.
    let n = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await?;
    assert!(n.status.as_ref().and_then(|s| s.phase.clone()).is_none());
    // Through /status it sticks, and spec changes there are ignored.
    let n = nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podCIDR": "x"}, "status": {"phase": "Running"}})),
        )
        .await?;
    assert_eq!(n.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(n.spec.unwrap().pod_cidr.as_deref(), Some("10.0.0.0/24"));
    assert_eq!(
        n.metadata.generation.unwrap(),
        g1,
        "status changes do not bump generation"
    );
    let n = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await?;
    assert_eq!(
        n.metadata.generation.unwrap(),
        g1 + 1,
        "spec changes bump generation"
    );
    let n = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await?;
    assert_eq!(
        n.metadata.generation.unwrap(),
        g1 + 1,
        "metadata changes do not bump generation"
    );
    // Finalizers: deletion sets deletionTimestamp; removing the last finalizer deletes.
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let mut c = cm("fin", json!({}));
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &c).await?;
    cms.delete("fin", &DeleteParams::default()).await?;
    let held = cms.get("fin").await?;
    assert!(held.metadata.deletion_timestamp.is_some());
    cms.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert!(cms.get_opt("fin").await?.is_none());
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn custom_resources_are_served_after_crd_registration()
-> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let crd: CustomResourceDefinition = serde_yaml::from_str(common::TEST_CRD)?;
    crds.create(&PostParams::default(), &crd).await?;
    let got = crds.get("widgets.example.com").await?;
    let conds = got
        .status
        .ok_or("no status")?
        .conditions
        .ok_or("no conditions")?;
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    // Discovery now lists it.
    let discovery = kube::Discovery::new(env.client.clone()).run().await?;
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .ok_or("Widget not discovered")?;
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "widgets/status")
            || ar.plural == "widgets"
    );
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}),
    )?;
    let created = widgets.create(&PostParams::default(), &w).await?;
    assert_eq!(
        created.data["spec"]["color"], "blue",
        "defaults from the schema"
    );
    // Schema validation: a required field is missing.
    let bad: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"color": "red"}}),
    )?;
    let kube::Error::Api(s) = widgets
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("spec.size: Required value"),
        "{}",
        s.message
    );
    // Status subresource.
    let st = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Done"}})),
        )
        .await?;
    assert_eq!(st.data["status"]["phase"], "Done");
    let main = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Nope"}})),
        )
        .await?;
    assert_eq!(main.data["status"]["phase"], "Done");
    // Watch and list.
    let l = widgets.list(&ListParams::default()).await?;
    assert_eq!(l.items.len(), 1);
    let rv = l.metadata.resource_version.ok_or("no resourceVersion")?;
    let mut stream = widgets
        .watch(&WatchParams::default().timeout(5), &rv)
        .await?
        .boxed();
    widgets.delete("w1", &DeleteParams::default()).await?;
    loop {
        if let Some(WatchEvent::Deleted(o)) = stream.try_next().await? {
            assert_eq!(o.metadata.name.as_deref(), Some("w1"));
            break;
        }
    }
    env.sandbox.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bearer_tokens_and_request_log() -> Result<(), Box<dyn std::error::Error>> {
    let env = common::start(sofort_sandbox::SandboxConfig {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes.list(&ListParams::default()).await?;
    assert_eq!(env.sandbox.stats().count("list", "nodes", ""), 1);
    let rec = env
        .sandbox
        .stats()
        .requests()
        .into_iter()
        .find(|r| r.resource == "nodes")
        .ok_or("nodes not listed")?;
    assert_eq!(rec.user, "admin");
    // Without the token: 401.
    let resp = reqwest_like_get(&format!("{}/api/v1/nodes", env.sandbox.url())).await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    env.sandbox.shutdown().await;
    Ok(())
}

async fn reqwest_like_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn injected_faults_by_verb_and_resource() -> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    env.sandbox.faults().add(
        sofort_sandbox::FaultRule::new(sofort_sandbox::FaultEffect::Error(500), 1.0)
            .verb("list")
            .resource("configmaps"),
    );
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    let kube::Error::Api(s) = cms.list(&ListParams::default()).await.unwrap_err() else {
        panic!()
    };
    assert_eq!(s.code, 500);
    cms.create(&PostParams::default(), &cm("ok", json!({})))
        .await?;
    env.sandbox.faults().clear();
    assert_eq!(cms.list(&ListParams::default()).await?.items.len(), 1);
    env.sandbox.shutdown().await;
    Ok(())
}

/// Watches pinned to one node's pods or one object by name are routed in the
/// store; they must see exactly what a filtering watch would, including pods
/// bound later and moves off the node, and `spec.nodeName=` still selects the
/// unbound pods.
#[tokio::test]
async fn node_and_name_pinned_watches_see_exactly_their_objects()
-> Result<(), Box<dyn std::error::Error>> {
    let env = common::bare().await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let pod = |name: &str, node: Option<&str>| -> Result<Pod, serde_json::Error> {
        let mut v = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        if let Some(n) = node {
            v["spec"]["nodeName"] = json!(n);
        }
        serde_json::from_value(v)
    };
    pods.create(&PostParams::default(), &pod("p1", Some("n1"))?)
        .await?;
    let p2 = pods
        .create(&PostParams::default(), &pod("p2", None)?)
        .await?;
    let unbound = pods
        .list(&ListParams::default().fields("spec.nodeName="))
        .await?;
    let names: Vec<_> = unbound
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["p2"]);
    let rv = p2
        .metadata
        .resource_version
        .clone()
        .ok_or("no resourceVersion")?;
    let on_n1 = WatchParams::default().fields("spec.nodeName=n1").timeout(5);
    let mut node_watch = pods.watch(&on_n1, &rv).await?.boxed();
    let by_name = WatchParams::default().fields("metadata.name=p2").timeout(5);
    let mut name_watch = pods.watch(&by_name, &rv).await?.boxed();
    let label = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"x": v}}}));
    pods.patch("p2", &PatchParams::default(), &label("1"))
        .await?;
    pods.patch("p1", &PatchParams::default(), &label("1"))
        .await?;
    pods.create(&PostParams::default(), &pod("p3", Some("n1"))?)
        .await?;
    pods.create(&PostParams::default(), &pod("p4", Some("n2"))?)
        .await?;
    pods.delete("p1", &DeleteParams::default().grace_period(0))
        .await?;
    pods.patch("p2", &PatchParams::default(), &label("2"))
        .await?;
    let describe = |e: WatchEvent<Pod>| match e {
        WatchEvent::Added(p) => format!("ADDED {}", p.metadata.name.unwrap_or_default()),
        WatchEvent::Modified(p) => format!("MODIFIED {}", p.metadata.name.unwrap_or_default()),
        WatchEvent::Deleted(p) => format!("DELETED {}", p.metadata.name.unwrap_or_default()),
        _ => String::new(),
    };
    let mut got = vec![];
    while got.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), node_watch.try_next()).await {
            Ok(Ok(Some(e))) => got.push(describe(e)),
            _ => break,
        }
        got.retain(|s| !s.is_empty());
    }
    assert_eq!(got, ["MODIFIED p1", "ADDED p3", "DELETED p1"]);
    let mut got = vec![];
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), name_watch.try_next()).await {
            Ok(Ok(Some(e))) => got.push(describe(e)),
            _ => break,
        }
        got.retain(|s| !s.is_empty());
    }
    assert_eq!(got, ["MODIFIED p2", "MODIFIED p2"]);
    env.sandbox.shutdown().await;
    Ok(())
}
