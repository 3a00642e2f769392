//! The object store: every object of every resource, one global resourceVersion
//! counter, and a bounded history of changes for watches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

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

struct Inner {
    rv: u64,
    objects: HashMap<Arc<str>, BTreeMap<Key, Obj>>,
    history: VecDeque<Arc<WatchEvent>>,
    history_cap: usize,
    /// Events at or below this version are no longer in the history.
    compacted: u64,
}

pub struct Store {
    inner: RwLock<Inner>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    changed: watch::Sender<u64>,
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

fn set_meta(obj: &mut Value, field: &str, v: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = v;
}

impl Store {
    pub fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(16384);
        let (changed, _) = watch::channel(0);
        Store {
            inner: RwLock::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: VecDeque::new(),
                history_cap: history_cap.max(1),
                compacted: 1,
            }),
            tx,
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
        let inner = self.read();
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
                    if &v == old.as_ref() {
                        return Ok((current, extra));
                    }
                } else {
                    if meta_str(&v, "uid").is_empty() {
                        set_meta(&mut v, "uid", json!(new_uid()));
                    }
                    if meta_str(&v, "creationTimestamp").is_empty() {
                        set_meta(&mut v, "creationTimestamp", json!(now_rfc3339()));
                    }
                }
                inner.rv += 1;
                let rv = inner.rv;
                set_meta(&mut v, "resourceVersion", json!(rv.to_string()));
                let obj = Arc::new(v);
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
        // Sent under the lock so watchers see events in order and none slips
        // between a watcher's backlog and its subscription.
        let _ = self.tx.send(event);
        drop(inner);
        self.changed.send_replace(rv);
        Ok((Some(result), extra))
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
    #[allow(clippy::type_complexity)]
    pub fn watch(
        &self,
        gr: &str,
        since: u64,
    ) -> Result<(Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>), u64> {
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
        Ok((backlog, self.tx.subscribe()))
    }

    /// Current objects plus a subscription, atomically (for watches that start
    /// with the current state).
    #[allow(clippy::type_complexity)]
    pub fn snapshot_and_subscribe(
        &self,
        gr: &str,
        ns: Option<&str>,
    ) -> (u64, Vec<Obj>, broadcast::Receiver<Arc<WatchEvent>>) {
        let inner = self.read();
        let rx = self.tx.subscribe();
        let items = match inner.objects.get(gr) {
            Some(m) => m
                .iter()
                .filter(|(k, _)| ns.is_none_or(|n| n == k.0))
                .map(|(_, v)| v.clone())
                .collect(),
            None => vec![],
        };
        (inner.rv, items, rx)
    }

    /// Oldest resourceVersion a watch may still resume from.
    pub fn compacted(&self) -> u64 {
        self.read().compacted
    }

    /// Forget the whole change history (watches from any older version get 410).
    pub fn compact(&self) {
        let mut inner = self.write();
        inner.history.clear();
        inner.compacted = inner.rv;
    }
}
