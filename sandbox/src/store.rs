//! The object store: every object of every resource, one global resourceVersion
//! counter, and a bounded history of changes for watches.
//!
//! Watches are routed, not broadcast: each open watch registers for one
//! resource and, when its field selector pins `metadata.name` or
//! `spec.nodeName` to one value, for that value only, so a change wakes only
//! the watches that may want it (at 5,000 nodes, a Node change used to wake
//! every agent's watch of its own Node). Pods are indexed by `spec.nodeName`
//! so a list or watch of one node's pods does not scan every pod.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;

/// A stored object. Shared, never mutated in place.
pub type Obj = Arc<Value>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub gr: Arc<str>,
    pub kind: EventType,
    pub object: Obj,
    /// The object before a modification (to compute selector transitions).
    pub old: Option<Obj>,
}

/// What a mutation closure decides.
pub enum Change {
    Put(Value),
    Delete,
    Keep,
}

type Key = (String, String);

/// Events a watch may fall behind by before it is ended (the client resumes
/// from the last version it saw, as after a real server drops a slow watch).
pub(crate) const WATCH_QUEUE: usize = 8192;

/// The field a watch is routed by, when its field selector pins one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteField {
    /// `metadata.name`.
    Name,
    /// `spec.nodeName` (pods).
    NodeName,
}

impl RouteField {
    /// The field selector's name of the field.
    pub fn selector_name(self) -> &'static str {
        match self {
            RouteField::Name => "metadata.name",
            RouteField::NodeName => "spec.nodeName",
        }
    }
    fn value_of(self, obj: &Value) -> Option<&str> {
        match self {
            RouteField::Name => obj.pointer("/metadata/name"),
            RouteField::NodeName => obj.pointer("/spec/nodeName"),
        }
        .and_then(Value::as_str)
    }
}

/// Which changes of a resource a watch receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Every change.
    All,
    /// Changes of objects whose field has (or had) this value.
    Field(RouteField, String),
}

/// Open watches by registration id.
type Senders = HashMap<u64, mpsc::Sender<Arc<WatchEvent>>>;

#[derive(Default)]
struct ResourceWatchers {
    all: Senders,
    by_field: HashMap<(RouteField, String), Senders>,
}

#[derive(Default)]
struct Watchers {
    next_id: u64,
    by_gr: HashMap<String, ResourceWatchers>,
}

impl Watchers {
    fn add(&mut self, gr: &str, route: Route) -> (u64, mpsc::Receiver<Arc<WatchEvent>>) {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        self.next_id += 1;
        let id = self.next_id;
        let rw = self.by_gr.entry(gr.to_string()).or_default();
        match route {
            Route::All => {
                rw.all.insert(id, tx);
            }
            Route::Field(f, v) => {
                rw.by_field.entry((f, v)).or_default().insert(id, tx);
            }
        }
        (id, rx)
    }

    fn remove(&mut self, gr: &str, route: &Route, id: u64) {
        let Some(rw) = self.by_gr.get_mut(gr) else {
            return;
        };
        match route {
            Route::All => {
                rw.all.remove(&id);
            }
            Route::Field(f, v) => {
                let key = (*f, v.clone());
                if let Some(m) = rw.by_field.get_mut(&key) {
                    m.remove(&id);
                    if m.is_empty() {
                        rw.by_field.remove(&key);
                    }
                }
            }
        }
    }

    /// Queues the event for every watch that may want it; a watch whose
    /// queue is full (or whose reader is gone) is dropped, which ends it.
    fn dispatch(&mut self, event: &Arc<WatchEvent>) {
        let Some(rw) = self.by_gr.get_mut(&*event.gr) else {
            return;
        };
        let send = |m: &mut Senders| {
            m.retain(|_, tx| tx.try_send(event.clone()).is_ok());
        };
        send(&mut rw.all);
        if rw.by_field.is_empty() {
            return;
        }
        for f in [RouteField::Name, RouteField::NodeName] {
            let now = f.value_of(&event.object);
            let before = event.old.as_deref().and_then(|o| f.value_of(o));
            for v in [now, before.filter(|b| Some(*b) != now)]
                .into_iter()
                .flatten()
            {
                let key = (f, v.to_string());
                if let Some(m) = rw.by_field.get_mut(&key) {
                    send(m);
                    if m.is_empty() {
                        rw.by_field.remove(&key);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.by_gr
            .values()
            .map(|rw| rw.all.len() + rw.by_field.values().map(HashMap::len).sum::<usize>())
            .sum()
    }
}

/// The changes one watch receives; it unregisters itself when dropped.
pub struct Subscription {
    rx: mpsc::Receiver<Arc<WatchEvent>>,
    watchers: Arc<Mutex<Watchers>>,
    gr: String,
    route: Route,
    id: u64,
}

impl Subscription {
    /// The next change, or `None` when the watch was dropped for falling behind.
    pub async fn recv(&mut self) -> Option<Arc<WatchEvent>> {
        self.rx.recv().await
    }

    /// A change already queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Arc<WatchEvent>, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut w) = self.watchers.lock() {
            w.remove(&self.gr, &self.route, self.id);
        }
    }
}

struct Inner {
    rv: u64,
    objects: HashMap<Arc<str>, BTreeMap<Key, Obj>>,
    /// Pods by `spec.nodeName`.
    pods_by_node: HashMap<String, BTreeSet<Key>>,
    history: VecDeque<Arc<WatchEvent>>,
    history_cap: usize,
    /// Events at or below this version are no longer in the history.
    compacted: u64,
}

pub struct Store {
    inner: RwLock<Inner>,
    /// Locked only while `inner` is held (read or write), never the other way.
    watchers: Arc<Mutex<Watchers>>,
    changed: watch::Sender<u64>,
}

const PODS: &str = "pods";

fn node_of(obj: &Value) -> Option<&str> {
    obj.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

pub struct ListPage {
    pub rv: u64,
    pub items: Vec<Obj>,
    /// Key of the last returned item when more remain.
    pub next: Option<Key>,
    pub remaining: usize,
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = fastrand::u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Drops the metadata fields that are JSON `null` (`annotations: null`,
/// `labels: null`, …), as the real server does: there a null decodes to an
/// absent map or list and is not stored. Stored, it would be a present
/// field to CEL (`has(oldObject.metadata.annotations)`) with a value no
/// map function takes.
fn drop_null_metadata(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|_, x| !x.is_null());
    }
}

fn set_meta(obj: &mut Value, field: &str, v: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = v;
}

impl Store {
    pub fn new(history_cap: usize) -> Self {
        let (changed, _) = watch::channel(0);
        Store {
            inner: RwLock::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                pods_by_node: HashMap::new(),
                history: VecDeque::new(),
                history_cap: history_cap.max(1),
                compacted: 1,
            }),
            watchers: Arc::new(Mutex::new(Watchers::default())),
            changed,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Current global resourceVersion.
    pub fn rv(&self) -> u64 {
        self.read().rv
    }

    /// A receiver that is marked changed after every write.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn get(&self, gr: &str, ns: &str, name: &str) -> Option<Obj> {
        let inner = self.read();
        inner
            .objects
            .get(gr)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Every object of a resource (optionally of one namespace), in key order.
    pub fn all(&self, gr: &str, ns: Option<&str>) -> Vec<Obj> {
        self.list(gr, ns, None, None, |_| true).items
    }

    pub fn count(&self, gr: &str) -> usize {
        self.read().objects.get(gr).map_or(0, BTreeMap::len)
    }

    /// A page of objects after `start_after`, at most `limit`, that pass `filter`.
    pub fn list(
        &self,
        gr: &str,
        ns: Option<&str>,
        start_after: Option<Key>,
        limit: Option<usize>,
        filter: impl Fn(&Value) -> bool,
    ) -> ListPage {
        self.list_on_node(gr, ns, None, start_after, limit, filter)
    }

    /// Pods bound to `node`, from the index (no scan of every pod).
    pub fn pods_on_node(&self, node: &str) -> Vec<Obj> {
        self.list_on_node(PODS, None, Some(node), None, None, |_| true)
            .items
    }

    /// As [`Store::list`]; with `node`, only pods bound to that node are
    /// considered (through the index), so `filter` must still check the rest.
    pub fn list_on_node(
        &self,
        gr: &str,
        ns: Option<&str>,
        node: Option<&str>,
        start_after: Option<Key>,
        limit: Option<usize>,
        filter: impl Fn(&Value) -> bool,
    ) -> ListPage {
        let inner = self.read();
        Self::page(&inner, gr, ns, node, start_after, limit, &filter, None)
    }

    /// As [`Store::list_on_node`], but of the objects as they were at
    /// resourceVersion `at` (the snapshot a paged list started from, as a
    /// real API server serves every page of a list at its first page's
    /// version). Rebuilt from the change history: Err carries the oldest
    /// version still served when `at` is compacted away.
    #[allow(clippy::too_many_arguments)]
    pub fn list_at(
        &self,
        gr: &str,
        ns: Option<&str>,
        node: Option<&str>,
        start_after: Option<Key>,
        limit: Option<usize>,
        filter: impl Fn(&Value) -> bool,
        at: u64,
    ) -> Result<ListPage, u64> {
        let inner = self.read();
        if at < inner.compacted {
            return Err(inner.compacted);
        }
        Ok(Self::page(
            &inner,
            gr,
            ns,
            node,
            start_after,
            limit,
            &filter,
            Some(at),
        ))
    }

    /// The objects of `gr` changed after `at`, each as it was at `at`
    /// (None: it did not exist then). Needs the history back to `at`.
    fn before_changes(inner: &Inner, gr: &str, at: u64) -> HashMap<Key, Option<Obj>> {
        let mut past = HashMap::new();
        let first = inner.history.partition_point(|e| e.rv <= at);
        for e in inner.history.range(first..) {
            if &*e.gr != gr {
                continue;
            }
            let key = (
                meta_str(&e.object, "namespace").to_string(),
                meta_str(&e.object, "name").to_string(),
            );
            // The first change after `at` tells what the object was at `at`.
            past.entry(key).or_insert_with(|| match e.kind {
                EventType::Added => None,
                EventType::Modified | EventType::Deleted => e.old.clone(),
            });
        }
        past
    }

    #[allow(clippy::too_many_arguments)]
    fn page(
        inner: &Inner,
        gr: &str,
        ns: Option<&str>,
        node: Option<&str>,
        start_after: Option<Key>,
        limit: Option<usize>,
        filter: &dyn Fn(&Value) -> bool,
        at: Option<u64>,
    ) -> ListPage {
        let past = match at {
            Some(at) if at < inner.rv => Self::before_changes(inner, gr, at),
            _ => HashMap::new(),
        };
        let node = node.filter(|_| gr == PODS);
        if past.is_empty() {
            let mut page = match node {
                Some(node) => Self::list_indexed(inner, ns, node, start_after, limit, filter),
                None => Self::list_current(inner, gr, ns, start_after, limit, filter),
            };
            page.rv = at.unwrap_or(inner.rv);
            return page;
        }
        // Keys that exist now or existed at `at`, in key order.
        let after =
            |k: &Key| start_after.as_ref().is_none_or(|s| k > s) && ns.is_none_or(|ns| k.0 == ns);
        let mut keys: BTreeSet<&Key> = past.keys().filter(|k| after(k)).collect();
        match node {
            Some(node) => {
                if let Some(index) = inner.pods_by_node.get(node) {
                    keys.extend(index.iter().filter(|k| after(k)));
                }
            }
            None => {
                if let Some(map) = inner.objects.get(gr) {
                    keys.extend(map.keys().filter(|k| after(k)));
                }
            }
        }
        let map = inner.objects.get(gr);
        let mut page = ListPage {
            rv: at.unwrap_or(inner.rv),
            items: vec![],
            next: None,
            remaining: 0,
        };
        for k in keys {
            let value = match past.get(k) {
                Some(then) => then.as_ref(),
                None => map.and_then(|m| m.get(k)),
            };
            let Some(v) = value else { continue };
            if node.is_some_and(|n| node_of(v) != Some(n)) || !filter(v) {
                continue;
            }
            if limit.is_some_and(|l| page.items.len() >= l) {
                page.remaining += 1;
                continue;
            }
            page.items.push(v.clone());
            page.next = Some(k.clone());
        }
        if page.remaining == 0 {
            page.next = None;
        }
        page
    }

    fn list_current(
        inner: &Inner,
        gr: &str,
        ns: Option<&str>,
        start_after: Option<Key>,
        limit: Option<usize>,
        filter: &dyn Fn(&Value) -> bool,
    ) -> ListPage {
        let rv = inner.rv;
        let Some(map) = inner.objects.get(gr) else {
            return ListPage {
                rv,
                items: vec![],
                next: None,
                remaining: 0,
            };
        };
        let lower = match (&start_after, ns) {
            (Some(k), _) => std::ops::Bound::Excluded(k.clone()),
            (None, Some(ns)) => std::ops::Bound::Included((ns.to_string(), String::new())),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0;
        for (k, v) in map.range((lower, std::ops::Bound::Unbounded)) {
            if let Some(ns) = ns
                && k.0 != ns
            {
                break;
            }
            if !filter(v) {
                continue;
            }
            if let Some(l) = limit
                && items.len() >= l
            {
                remaining += 1;
                continue;
            }
            items.push(v.clone());
            next = Some(k.clone());
        }
        if remaining == 0 {
            next = None;
        }
        ListPage {
            rv,
            items,
            next,
            remaining,
        }
    }

    fn list_indexed(
        inner: &Inner,
        ns: Option<&str>,
        node: &str,
        start_after: Option<Key>,
        limit: Option<usize>,
        filter: &dyn Fn(&Value) -> bool,
    ) -> ListPage {
        let mut page = ListPage {
            rv: inner.rv,
            items: vec![],
            next: None,
            remaining: 0,
        };
        let (Some(keys), Some(map)) = (inner.pods_by_node.get(node), inner.objects.get(PODS))
        else {
            return page;
        };
        let lower = match start_after {
            Some(k) => std::ops::Bound::Excluded(k),
            None => std::ops::Bound::Unbounded,
        };
        for k in keys.range((lower, std::ops::Bound::Unbounded)) {
            if ns.is_some_and(|ns| ns != k.0) {
                continue;
            }
            let Some(v) = map.get(k).filter(|v| filter(v)) else {
                continue;
            };
            if limit.is_some_and(|l| page.items.len() >= l) {
                page.remaining += 1;
                continue;
            }
            page.items.push(v.clone());
            page.next = Some(k.clone());
        }
        if page.remaining == 0 {
            page.next = None;
        }
        page
    }

    /// Atomically read-modify-write one object. The closure sees the current
    /// object (if any) and decides; resourceVersion, uid and creationTimestamp
    /// are maintained here. Returns the stored object after the change (the
    /// deleted object for a deletion) and the closure's extra result.
    pub fn mutate<R>(
        &self,
        gr: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(Option<&Obj>) -> Result<(Change, R), ApiError>,
    ) -> Result<(Option<Obj>, R), ApiError> {
        let mut inner = self.write();
        let key = (ns.to_string(), name.to_string());
        let gr_arc: Arc<str> = match inner.objects.get_key_value(gr) {
            Some((k, _)) => k.clone(),
            None => Arc::from(gr),
        };
        let current = inner.objects.get(gr).and_then(|m| m.get(&key)).cloned();
        let (change, extra) = f(current.as_ref())?;
        let event = match change {
            Change::Keep => return Ok((current, extra)),
            Change::Put(mut v) => {
                if let Some(old) = &current {
                    // Identity fields cannot change.
                    set_meta(&mut v, "uid", json!(meta_str(old, "uid")));
                    set_meta(
                        &mut v,
                        "creationTimestamp",
                        old["metadata"]["creationTimestamp"].clone(),
                    );
                    set_meta(
                        &mut v,
                        "resourceVersion",
                        json!(meta_str(old, "resourceVersion")),
                    );
                } else {
                    if meta_str(&v, "uid").is_empty() {
                        set_meta(&mut v, "uid", json!(new_uid()));
                    }
                    if meta_str(&v, "creationTimestamp").is_empty() {
                        set_meta(&mut v, "creationTimestamp", json!(now_rfc3339()));
                    }
                }
                drop_null_metadata(&mut v);
                if current.as_deref() == Some(&v) {
                    return Ok((current, extra));
                }
                inner.rv += 1;
                let rv = inner.rv;
                set_meta(&mut v, "resourceVersion", json!(rv.to_string()));
                let obj = Arc::new(v);
                if gr == PODS {
                    let before = current.as_deref().and_then(node_of);
                    if before != node_of(&obj) {
                        Self::unindex(&mut inner, before, &key);
                        if let Some(n) = node_of(&obj) {
                            inner
                                .pods_by_node
                                .entry(n.to_string())
                                .or_default()
                                .insert(key.clone());
                        }
                    }
                }
                inner
                    .objects
                    .entry(gr_arc.clone())
                    .or_default()
                    .insert(key, obj.clone());
                WatchEvent {
                    rv,
                    gr: gr_arc,
                    kind: if current.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    object: obj,
                    old: current,
                }
            }
            Change::Delete => {
                let Some(old) = current else {
                    return Ok((None, extra));
                };
                if let Some(m) = inner.objects.get_mut(gr) {
                    m.remove(&key);
                }
                if gr == PODS {
                    Self::unindex(&mut inner, node_of(&old), &key);
                }
                inner.rv += 1;
                let rv = inner.rv;
                let mut v = (*old).clone();
                set_meta(&mut v, "resourceVersion", json!(rv.to_string()));
                WatchEvent {
                    rv,
                    gr: gr_arc,
                    kind: EventType::Deleted,
                    object: Arc::new(v),
                    old: Some(old),
                }
            }
        };
        let event = Arc::new(event);
        inner.history.push_back(event.clone());
        while inner.history.len() > inner.history_cap {
            if let Some(e) = inner.history.pop_front() {
                inner.compacted = e.rv;
            }
        }
        let result = event.object.clone();
        let rv = event.rv;
        // Queued under the lock so watchers see events in order and none
        // slips between a watcher's backlog and its subscription.
        if let Ok(mut w) = self.watchers.lock() {
            w.dispatch(&event);
        }
        drop(inner);
        self.changed.send_replace(rv);
        Ok((Some(result), extra))
    }

    fn unindex(inner: &mut Inner, node: Option<&str>, key: &Key) {
        let Some(node) = node else { return };
        if let Some(set) = inner.pods_by_node.get_mut(node) {
            set.remove(key);
            if set.is_empty() {
                inner.pods_by_node.remove(node);
            }
        }
    }

    fn subscribe(&self, gr: &str, route: Route) -> Subscription {
        let (id, rx) = match self.watchers.lock() {
            Ok(mut w) => w.add(gr, route.clone()),
            Err(e) => e.into_inner().add(gr, route.clone()),
        };
        Subscription {
            rx,
            watchers: self.watchers.clone(),
            gr: gr.to_string(),
            route,
            id,
        }
    }

    /// Open watch registrations.
    #[cfg(test)]
    pub fn watch_count(&self) -> usize {
        self.watchers.lock().map_or(0, |w| w.count())
    }

    /// Drop every object of a resource (when a CRD goes away).
    pub fn drop_resource(&self, gr: &str) {
        let objs = self.all(gr, None);
        for o in objs {
            let ns = meta_str(&o, "namespace").to_string();
            let name = meta_str(&o, "name").to_string();
            let _ = self.mutate(gr, &ns, &name, |_| Ok((Change::Delete, ())));
        }
    }

    /// Events after `since` for `gr`, and a subscription for what follows.
    /// Err carries the oldest version still served when `since` is compacted.
    pub fn watch(
        &self,
        gr: &str,
        since: u64,
        route: Route,
    ) -> Result<(Vec<Arc<WatchEvent>>, Subscription), u64> {
        let inner = self.read();
        if since < inner.compacted {
            return Err(inner.compacted);
        }
        let backlog = inner
            .history
            .iter()
            .filter(|e| e.rv > since && &*e.gr == gr)
            .cloned()
            .collect();
        Ok((backlog, self.subscribe(gr, route)))
    }

    /// Current objects plus a subscription, atomically (for watches that start
    /// with the current state). With a `spec.nodeName` route on pods, only
    /// that node's pods (from the index).
    pub fn snapshot_and_subscribe(
        &self,
        gr: &str,
        ns: Option<&str>,
        route: Route,
    ) -> (u64, Vec<Obj>, Subscription) {
        let inner = self.read();
        let sub = self.subscribe(gr, route.clone());
        let items = match (&route, inner.objects.get(gr)) {
            (Route::Field(RouteField::NodeName, node), Some(_)) if gr == PODS => {
                Self::list_indexed(&inner, ns, node, None, None, &|_| true).items
            }
            (_, Some(m)) => m
                .iter()
                .filter(|(k, _)| ns.is_none_or(|n| n == k.0))
                .map(|(_, v)| v.clone())
                .collect(),
            (_, None) => vec![],
        };
        (inner.rv, items, sub)
    }

    /// Forget the whole change history (watches from any older version get 410).
    pub fn compact(&self) {
        let mut inner = self.write();
        inner.history.clear();
        inner.compacted = inner.rv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &Store, gr: &str, ns: &str, name: &str, v: Value) {
        let r = s.mutate(gr, ns, name, |_| Ok((Change::Put(v), ())));
        assert!(r.is_ok());
    }

    fn pod(name: &str, node: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "default"}, "spec": {}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    }

    fn names(items: &[Obj]) -> Vec<&str> {
        items.iter().map(|o| meta_str(o, "name")).collect()
    }

    #[test]
    fn pods_are_indexed_by_node_through_binding_moves_and_deletion() {
        let s = Store::new(100);
        put(&s, "pods", "default", "a", pod("a", None));
        put(&s, "pods", "default", "b", pod("b", Some("w1")));
        put(&s, "pods", "default", "c", pod("c", Some("w1")));
        assert!(s.pods_on_node("w1").len() == 2 && s.pods_on_node("w2").is_empty());
        put(&s, "pods", "default", "a", pod("a", Some("w2")));
        put(&s, "pods", "default", "b", pod("b", Some("w2")));
        assert_eq!(names(&s.pods_on_node("w1")), ["c"]);
        assert_eq!(names(&s.pods_on_node("w2")), ["a", "b"]);
        let _ = s.mutate("pods", "default", "a", |_| Ok((Change::Delete, ())));
        assert_eq!(names(&s.pods_on_node("w2")), ["b"]);
        // Pages through the index as through the whole map.
        put(&s, "pods", "default", "d", pod("d", Some("w2")));
        let first = s.list_on_node("pods", None, Some("w2"), None, Some(1), |_| true);
        assert_eq!((names(&first.items), first.remaining), (vec!["b"], 1));
        let rest = s.list_on_node("pods", None, Some("w2"), first.next, Some(1), |_| true);
        assert_eq!((names(&rest.items), rest.next), (vec!["d"], None));
        // Other resources with a node filter are not confined by the index.
        put(
            &s,
            "events",
            "default",
            "e",
            json!({"metadata": {"name": "e"}}),
        );
        assert_eq!(
            s.list_on_node("events", None, Some("w2"), None, None, |_| true)
                .items
                .len(),
            1
        );
    }

    #[test]
    fn a_list_at_a_version_shows_the_objects_as_they_were_then() {
        let s = Store::new(100);
        put(&s, "pods", "default", "a", pod("a", Some("w1")));
        put(&s, "pods", "default", "b", pod("b", Some("w1")));
        put(&s, "pods", "default", "c", pod("c", Some("w2")));
        let at = s.rv();
        // After `at`: b moves to w2, c is deleted, d is added, a changes.
        put(&s, "pods", "default", "b", pod("b", Some("w2")));
        let _ = s.mutate("pods", "default", "c", |_| Ok((Change::Delete, ())));
        put(&s, "pods", "default", "d", pod("d", Some("w1")));
        let mut changed = pod("a", Some("w1"));
        changed["spec"]["x"] = json!(1);
        put(&s, "pods", "default", "a", changed);
        let all = |start: Option<Key>, limit| {
            s.list_at("pods", None, None, start, limit, |_| true, at)
                .unwrap_or_else(|_| panic!("compacted"))
        };
        let whole = all(None, None);
        assert_eq!((names(&whole.items), whole.rv), (vec!["a", "b", "c"], at));
        assert!(whole.items[0]["spec"].get("x").is_none(), "a as it was");
        // Paged: the page after `a` at `at`.
        let second = all(Some(("default".into(), "a".into())), Some(1));
        assert_eq!((names(&second.items), second.remaining), (vec!["b"], 1));
        // Through the node index, by the node the pods had at `at`.
        let w1 = s.list_at("pods", None, Some("w1"), None, None, |_| true, at);
        assert_eq!(w1.map(|p| names(&p.items).join(",")), Ok("a,b".into()));
        let w2 = s.list_at("pods", None, Some("w2"), None, None, |_| true, at);
        assert_eq!(w2.map(|p| names(&p.items).join(",")), Ok("c".into()));
        // The current state is unchanged by all this.
        assert_eq!(names(&s.all("pods", None)), ["a", "b", "d"]);
        // A version older than the history is refused.
        s.compact();
        assert!(
            s.list_at("pods", None, None, None, None, |_| true, at)
                .is_err()
        );
    }

    #[tokio::test]
    async fn watches_get_only_the_changes_routed_to_them() {
        let s = Store::new(100);
        let (_, _, mut n1) =
            s.snapshot_and_subscribe("nodes", None, Route::Field(RouteField::Name, "n1".into()));
        let (_, _, mut w1) = s.snapshot_and_subscribe(
            "pods",
            None,
            Route::Field(RouteField::NodeName, "w1".into()),
        );
        let (_, _, mut all) = s.snapshot_and_subscribe("pods", None, Route::All);
        assert_eq!(s.watch_count(), 3);
        put(&s, "nodes", "", "n2", json!({"metadata": {"name": "n2"}}));
        put(&s, "nodes", "", "n1", json!({"metadata": {"name": "n1"}}));
        put(&s, "pods", "default", "p", pod("p", Some("w2")));
        put(&s, "pods", "default", "p", pod("p", Some("w1")));
        put(&s, "pods", "default", "q", pod("q", Some("w3")));
        let _ = s.mutate("pods", "default", "p", |_| Ok((Change::Delete, ())));
        let got = |e: Option<Arc<WatchEvent>>| {
            e.map(|e| (e.kind, meta_str(&e.object, "name").to_string()))
        };
        assert_eq!(got(n1.recv().await), Some((EventType::Added, "n1".into())));
        // The move onto w1 and the deletion from it; nothing of w2 or w3.
        assert_eq!(
            got(w1.recv().await),
            Some((EventType::Modified, "p".into()))
        );
        assert_eq!(got(w1.recv().await), Some((EventType::Deleted, "p".into())));
        for want in ["p", "p", "q", "p"] {
            assert_eq!(got(all.recv().await).map(|x| x.1), Some(want.to_string()));
        }
        assert!(n1.rx.try_recv().is_err() && w1.rx.try_recv().is_err());
        drop(w1);
        drop(all);
        assert_eq!(s.watch_count(), 1);
    }

    #[tokio::test]
    async fn a_watch_that_falls_behind_is_ended_after_its_queue() {
        let s = Store::new(100);
        let (_, _, mut sub) = s.snapshot_and_subscribe("pods", None, Route::All);
        for i in 0..=WATCH_QUEUE {
            put(
                &s,
                "pods",
                "default",
                "p",
                json!({"metadata": {"name": "p"}, "n": i}),
            );
        }
        let mut n = 0;
        while sub.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, WATCH_QUEUE);
        assert_eq!(s.watch_count(), 0);
    }

    #[test]
    fn null_metadata_fields_are_not_stored() {
        let s = Store::new(100);
        let node = |annotations: Value| json!({"metadata": {"name": "n1", "annotations": annotations, "labels": {"a": "b"}}});
        put(&s, "nodes", "", "n1", node(json!({"k": "v"})));
        put(&s, "nodes", "", "n1", node(Value::Null));
        let stored = s.get("nodes", "", "n1");
        let meta = stored.as_deref().and_then(|n| n.get("metadata"));
        assert!(
            meta.is_some_and(|m| !m.as_object().is_some_and(|o| o.contains_key("annotations"))),
            "{meta:?}"
        );
        assert_eq!(meta.and_then(|m| m.pointer("/labels/a")), Some(&json!("b")));
        // The same object again is no change: no new version.
        let rv = s.rv();
        put(&s, "nodes", "", "n1", node(Value::Null));
        assert_eq!(s.rv(), rv);
    }
}
