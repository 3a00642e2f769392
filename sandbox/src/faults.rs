//! Fault injection and request instrumentation.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What an injected fault does to a matching request.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultEffect {
    /// Answer with this HTTP status (429, 500, 409, ...) and a matching Status body.
    Error(u16),
    /// Delay the request, then serve it normally.
    Latency(Duration),
}

/// A fault applied to a share of the requests that match it.
#[derive(Clone, Debug)]
pub struct FaultRule {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; None: any.
    pub verb: Option<String>,
    /// Plural resource name (`pods`, `nodes`, `patchpolicies`); None: any.
    pub resource: Option<String>,
    /// `status`, `eviction`; None: any (including none).
    pub subresource: Option<String>,
    /// Probability in [0, 1].
    pub rate: f64,
    pub effect: FaultEffect,
}

impl FaultRule {
    pub fn new(effect: FaultEffect, rate: f64) -> Self {
        FaultRule {
            verb: None,
            resource: None,
            subresource: None,
            rate,
            effect,
        }
    }
    pub fn verb(mut self, v: &str) -> Self {
        self.verb = Some(v.into());
        self
    }
    pub fn resource(mut self, r: &str) -> Self {
        self.resource = Some(r.into());
        self
    }
    pub fn subresource(mut self, s: &str) -> Self {
        self.subresource = Some(s.into());
        self
    }
    fn matches(&self, verb: &str, resource: &str, sub: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
            && self.subresource.as_deref().is_none_or(|s| s == sub)
    }
}

/// Handle to the sandbox's faults (cloneable, thread-safe).
#[derive(Clone)]
pub struct Faults {
    inner: Arc<FaultsInner>,
}

struct FaultsInner {
    rules: Mutex<Vec<FaultRule>>,
    rng: Mutex<fastrand::Rng>,
    watch_kill: watch::Sender<u64>,
    never_return: Mutex<HashSet<String>>,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        let (watch_kill, _) = watch::channel(0);
        Faults {
            inner: Arc::new(FaultsInner {
                rules: Mutex::new(vec![]),
                rng: Mutex::new(fastrand::Rng::with_seed(seed)),
                watch_kill,
                never_return: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn add(&self, rule: FaultRule) {
        self.inner
            .rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule);
    }

    pub fn clear(&self) {
        self.inner
            .rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn reseed(&self, seed: u64) {
        *self.inner.rng.lock().unwrap_or_else(|e| e.into_inner()) = fastrand::Rng::with_seed(seed);
    }

    /// Close every open watch stream now (clients see the stream end and re-watch).
    pub fn drop_watches(&self) {
        self.inner.watch_kill.send_modify(|g| *g += 1);
    }

    pub(crate) fn watch_kill(&self) -> watch::Receiver<u64> {
        self.inner.watch_kill.subscribe()
    }

    /// A rebooting node with this name never comes back (stays NotReady).
    pub fn node_never_returns(&self, node: &str, never: bool) {
        let mut s = self
            .inner
            .never_return
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if never {
            s.insert(node.to_string());
        } else {
            s.remove(node);
        }
    }

    pub fn is_never_returning(&self, node: &str) -> bool {
        self.inner
            .never_return
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(node)
    }

    /// Faults drawn for one request: a delay and/or an error status.
    pub(crate) fn draw(
        &self,
        verb: &str,
        resource: &str,
        sub: &str,
    ) -> (Option<Duration>, Option<u16>) {
        let rules = self.inner.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut rng = self.inner.rng.lock().unwrap_or_else(|e| e.into_inner());
        let mut delay = None;
        let mut error = None;
        for r in rules.iter().filter(|r| r.matches(verb, resource, sub)) {
            if rng.f64() < r.rate {
                match r.effect {
                    FaultEffect::Latency(d) => delay = Some(delay.unwrap_or_default() + d),
                    FaultEffect::Error(c) => {
                        if error.is_none() {
                            error = Some(c)
                        }
                    }
                }
            }
        }
        (delay, error)
    }
}

/// One served API request.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The User-Agent header.
    pub user_agent: String,
    /// The user of the bearer token, when tokens are configured.
    pub user: String,
    pub code: u16,
    pub at: Instant,
}

/// Request counters and log (cloneable, thread-safe).
#[derive(Clone)]
pub struct Stats {
    inner: Arc<StatsInner>,
}

struct StatsInner {
    log: Mutex<VecDeque<RequestRecord>>,
    counts: Mutex<HashMap<(String, String, String), u64>>,
    open_watches: AtomicUsize,
    log_limit: usize,
    fleet: Mutex<FleetPasses>,
}

/// How many passes over the whole fleet the simulated controllers made,
/// and how long they took.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FleetPasses {
    pub count: u64,
    pub total: Duration,
    pub longest: Duration,
}

impl Stats {
    pub fn new(log_limit: usize) -> Self {
        Stats {
            inner: Arc::new(StatsInner {
                log: Mutex::new(VecDeque::new()),
                counts: Mutex::new(HashMap::new()),
                open_watches: AtomicUsize::new(0),
                log_limit,
                fleet: Mutex::new(FleetPasses::default()),
            }),
        }
    }

    pub(crate) fn record(&self, r: RequestRecord) {
        *self
            .inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((r.verb.clone(), r.resource.clone(), r.subresource.clone()))
            .or_default() += 1;
        let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
        log.push_back(r);
        while log.len() > self.inner.log_limit {
            log.pop_front();
        }
    }

    /// Requests served for (verb, resource, subresource); "" for no subresource.
    pub fn count(&self, verb: &str, resource: &str, subresource: &str) -> u64 {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(
                verb.to_string(),
                resource.to_string(),
                subresource.to_string(),
            ))
            .copied()
            .unwrap_or(0)
    }

    /// All counters by (verb, resource, subresource).
    pub fn counts(&self) -> HashMap<(String, String, String), u64> {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The most recent requests (bounded log), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    pub fn reset(&self) {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.inner
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub(crate) fn fleet_pass(&self, took: Duration) {
        let mut f = self.inner.fleet.lock().unwrap_or_else(|e| e.into_inner());
        f.count += 1;
        f.total += took;
        f.longest = f.longest.max(took);
    }

    /// The fleet passes since the sandbox started (not cleared by
    /// [`Stats::reset`]; subtract two readings for a span).
    pub fn fleet_passes(&self) -> FleetPasses {
        *self.inner.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watch streams open right now.
    pub fn open_watches(&self) -> usize {
        self.inner.open_watches.load(Ordering::SeqCst)
    }

    pub(crate) fn watch_guard(&self) -> WatchGuard {
        self.inner.open_watches.fetch_add(1, Ordering::SeqCst);
        WatchGuard(self.clone())
    }
}

pub(crate) struct WatchGuard(Stats);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.inner.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}
