//! The `PatchPolicy` API (`sofort.dev/v1alpha1`, cluster-scoped).
//!
//! Every doc comment on a field becomes its OpenAPI description, so
//! `kubectl explain patchpolicy.spec.rollout` reads from here. The schema carries
//! what the API server can check on its own (patterns, enums, bounds, CEL rules);
//! [`crate::core::spec::parse`] checks the rest and reports every problem with its path.
//! The patterns and defaults are constants here, used by the schema attributes,
//! the serde defaults and the parser alike.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every sofort resource.
pub const GROUP: &str = "sofort.dev";
/// API version served by this release.
pub const VERSION: &str = "v1alpha1";

/// Go-style duration: one or more `<number><unit>` parts with units `h`, `m`, `s`, `ms`.
/// Every duration field of the CRD carries it; [`crate::core::duration::parse`]
/// is the parser behind it.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$";
/// Longest duration string the CRD admits.
pub const DURATION_MAX_LENGTH: u32 = 64;

/// Default of `spec.drain.timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: &str = "15m";
/// Default of `spec.reboot.timeout`.
pub const DEFAULT_REBOOT_TIMEOUT: &str = "20m";
/// Default of `spec.patch.timeout`.
pub const DEFAULT_PATCH_TIMEOUT: &str = "30m";
/// Default of `spec.rollout.settle`.
pub const DEFAULT_SETTLE: &str = "2m";
/// Default of `spec.maintenanceWindows[].timeZone`.
pub const DEFAULT_TIME_ZONE: &str = "UTC";
/// Default of `spec.rollout.maxUnavailable`.
pub const DEFAULT_MAX_UNAVAILABLE: i32 = 1;
/// Wall-clock time of day, 24-hour `HH:MM`.
pub const TIME_OF_DAY_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$";
/// CEL rule of `spec.rollout.maxUnavailable`: an integer that fits the API's
/// int32, or a percentage; a string holding a plain number (`"3"`) is refused,
/// as Kubernetes itself refuses it for a PodDisruptionBudget.
pub const MAX_UNAVAILABLE_RULE: &str = "string(self).endsWith('%') ? string(self).matches('^([1-9][0-9]?|100)%$') : (string(self).matches('^[1-9][0-9]{0,9}$') && self == int(string(self)) && int(string(self)) <= 2147483647)";
/// The latest instant a timestamp of the spec may hold. The controller's time
/// type ends on 9999-12-30 (UTC, with room for any offset), so the CRD refuses
/// what it could not hold.
pub const LATEST_INSTANT: &str = "9999-12-30T00:00:00Z";
/// CEL rule bounding every timestamp of the spec by [`LATEST_INSTANT`].
pub const LATEST_INSTANT_RULE: &str = "self < timestamp('9999-12-30T00:00:00Z')";
const LATEST_INSTANT_MESSAGE: &str =
    "must be before 9999-12-30T00:00:00Z; for a blackout without end use 9999-01-01T00:00:00Z";

/// Looks like an IANA time-zone name (`UTC`, `Europe/Zurich`, `America/Argentina/Buenos_Aires`).
pub const TIME_ZONE_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$";

/// Desired state of a patch rollout: which nodes, in what order, when, and how
/// each node is drained, patched and rebooted.
// The printer columns repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sofort.dev",
    version = "v1alpha1",
    kind = "PatchPolicy",
    plural = "patchpolicies",
    singular = "patchpolicy",
    shortname = "pp",
    category = "sofort",
    status = "PatchPolicyStatus",
    doc = "PatchPolicy declares a rollout that cordons, drains, optionally patches, reboots and uncordons the selected nodes in order, inside maintenance windows or at once when urgent.",
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".spec.revision",
        description = "Revision being rolled out"
    ),
    printcolumn(
        name = "Urgent",
        type_ = "boolean",
        json_path = ".spec.urgent",
        description = "Starts at once, ignoring windows"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Rollout phase"
    ),
    printcolumn(
        name = "Updated",
        type_ = "string",
        json_path = ".status.nodes.summary",
        description = "Nodes done out of nodes selected"
    ),
    printcolumn(
        name = "Round",
        type_ = "string",
        json_path = ".status.round.id",
        description = "Current round of a standing policy (trigger RebootRequired)"
    ),
    printcolumn(
        name = "Round phase",
        type_ = "string",
        json_path = ".status.round.phase",
        description = "Phase of the current round: Scheduled, Running or Completed"
    ),
    printcolumn(
        name = "Next window",
        type_ = "string",
        json_path = ".status.nextWindow.start",
        description = "Start of the next usable maintenance window"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".spec.revision",
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(REVISION_REQUIRED_RULE).message("revision is required unless trigger is RebootRequired"))]
pub struct PatchPolicySpec {
    /// Identifies the patch level to roll out. Bump it (for example in Git) to start
    /// a new rollout; every selected node is processed once per revision.
    /// Required with `trigger: Revision`. With `trigger: RebootRequired` it is
    /// optional: its value when the policy is created forces nothing, and
    /// changing it later makes the next round cover every selected node.
    #[serde(default)]
    #[schemars(length(max = 128), regex(pattern = r"^(\S(.*\S)?)?$"))]
    pub revision: String,

    /// What makes a node due. `Revision` (default): every selected node once
    /// per `revision`. `RebootRequired`: a standing policy; a node is due
    /// whenever its agent reports `sofort.dev/reboot-required=true`, and due
    /// nodes are patched in announced rounds (`status.round`); `reboot.when`
    /// is then `IfRequired`.
    #[serde(default)]
    pub trigger: Trigger,

    /// Start now: ignore maintenance windows, blackouts and the announce lead time.
    /// The unavailability budget and PodDisruptionBudgets still hold. Urgent
    /// policies claim nodes before non-urgent ones.
    #[serde(default)]
    pub urgent: bool,

    /// Stop starting new nodes. Nodes already in progress finish.
    #[serde(default)]
    pub paused: bool,

    /// Stop starting new nodes until this instant (RFC 3339, for example
    /// `2026-12-08T06:00:00+01:00`); after it the pause lifts itself and the
    /// controller looks again at that instant. Nodes already in progress
    /// finish. `paused: true` pauses regardless of it. Before 9999-12-30T00:00:00Z.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(LATEST_INSTANT_RULE).message("pausedUntil must be before 9999-12-30T00:00:00Z; for a pause without end use paused: true"))]
    pub paused_until: Option<Time>,

    /// Selects the nodes this policy patches. An empty selector selects every node.
    #[serde(default)]
    pub node_selector: LabelSelector,

    /// When routine (non-urgent) work may start. A node starts only inside one of
    /// these windows. An empty list means always open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub maintenance_windows: Vec<MaintenanceWindow>,

    /// Absolute time ranges in which no node starts, even inside a window
    /// (holidays, sales events). Blackouts win over windows; urgent ignores them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub blackouts: Vec<Blackout>,

    /// Tell people ahead: non-urgent work starts no earlier than this lead time after
    /// the rollout was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<Announce>,

    /// How many nodes at once, in which order, and when to halt.
    #[serde(default)]
    pub rollout: RolloutSpec,

    /// How pods are moved off a node before it reboots (as `kubectl drain`).
    #[serde(default)]
    pub drain: DrainSpec,

    /// When and how long a reboot may take.
    #[serde(default)]
    pub reboot: RebootSpec,

    /// Optional host command the node agent runs after the drain and before the
    /// reboot (for example a package upgrade). Runs only on agents started with
    /// host commands allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchSpec>,

    /// Who is told about the rollout, and what they are told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,

    /// Health gates: hold new starts while the cluster is unwell (alerts firing,
    /// PromQL queries returning series, blocking pods running) and hold a node
    /// from counting as done until the listed workloads are healthy again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<GatesSpec>,
}

/// CEL rule of the spec: `revision` may be empty only on a standing policy.
pub const REVISION_REQUIRED_RULE: &str = "(has(self.trigger) && self.trigger == 'RebootRequired') || (has(self.revision) && self.revision != '')";

/// What makes a node due (`spec.trigger`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Trigger {
    /// Every selected node once per `spec.revision`.
    #[default]
    Revision,
    /// A standing policy: a node is due whenever its agent reports that it
    /// needs a reboot; due nodes are grouped into announced rounds.
    RebootRequired,
}

/// Day of the week a maintenance window starts on.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum Weekday {
    /// Monday
    Mon,
    /// Tuesday
    Tue,
    /// Wednesday
    Wed,
    /// Thursday
    Thu,
    /// Friday
    Fri,
    /// Saturday
    Sat,
    /// Sunday
    Sun,
}

impl Weekday {
    /// All days, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The matching `jiff` weekday.
    pub fn to_jiff(self) -> jiff::civil::Weekday {
        match self {
            Weekday::Mon => jiff::civil::Weekday::Monday,
            Weekday::Tue => jiff::civil::Weekday::Tuesday,
            Weekday::Wed => jiff::civil::Weekday::Wednesday,
            Weekday::Thu => jiff::civil::Weekday::Thursday,
            Weekday::Fri => jiff::civil::Weekday::Friday,
            Weekday::Sat => jiff::civil::Weekday::Saturday,
            Weekday::Sun => jiff::civil::Weekday::Sunday,
        }
    }
}

/// A recurring weekly window in a time zone. A window whose `end` is at or before
/// its `start` wraps past midnight and belongs to the day it starts on
/// (`Fri 22:00-05:00` is open on Saturday at 03:00).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.start != self.end || self.start == '00:00'").message("start and end must differ; use start 00:00 and end 00:00 for a full day"))]
#[x_kube(validation = Rule::new(WEEKS_NEED_DAYS_RULE).message("weeksOfMonth needs days: list the weekdays whose occurrences it counts, for example days: [Tue] with weeksOfMonth: [2]"))]
#[x_kube(validation = Rule::new(OFFSET_NEEDS_WEEKS_RULE).message("offsetDays counts from a day picked by weeksOfMonth; set weeksOfMonth, or for a weekly window change days instead"))]
pub struct MaintenanceWindow {
    /// Days the window starts on. Empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,
    /// Local start time, `HH:MM` (24 h).
    #[schemars(regex(pattern = TIME_OF_DAY_PATTERN))]
    pub start: String,
    /// Local end time, `HH:MM` (24 h). At or before `start` means the window ends on the next day.
    #[schemars(regex(pattern = TIME_OF_DAY_PATTERN))]
    pub end: String,
    /// IANA time-zone name such as `Europe/Zurich`; daylight-saving changes are
    /// followed. Default `UTC`.
    #[serde(default = "default_time_zone")]
    #[schemars(
        regex(pattern = TIME_ZONE_PATTERN),
        length(max = 64)
    )]
    pub time_zone: String,
    /// Monthly windows: the window opens only on these occurrences of its
    /// `days` within the month, `1` to `5` (`2` with `days: [Tue]` is the
    /// second Tuesday) or `Last` (the last one). A month without a fifth
    /// occurrence has no window for `5`. Needs `days`. Empty: every week.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    #[x_kube(validation = Rule::new(WEEKS_OF_MONTH_RULE).message("each weeksOfMonth entry must be 1, 2, 3, 4, 5 or Last, each at most once"))]
    pub weeks_of_month: Vec<IntOrString>,
    /// With `weeksOfMonth`: the window opens this many days after each day it
    /// picks (`days: [Tue]`, `weeksOfMonth: [2]`, `offsetDays: 3` opens on the
    /// Friday after Patch Tuesday, in the next month when the sum passes the
    /// month's end). From 0 to 27. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = 27))]
    pub offset_days: u32,
}

/// Largest `offsetDays` of a maintenance window.
pub const MAX_OFFSET_DAYS: u32 = 27;
/// CEL rule of `weeksOfMonth`: 1 to 5 or `Last`, no duplicates.
pub const WEEKS_OF_MONTH_RULE: &str = "self.all(w, string(w) == 'Last' || (string(w).matches('^[1-5]$') && w == int(string(w)))) && self.all(w, self.exists_one(x, string(x) == string(w)))";
/// CEL rule of a maintenance window: `weeksOfMonth` needs `days`.
pub const WEEKS_NEED_DAYS_RULE: &str = "!has(self.weeksOfMonth) || size(self.weeksOfMonth) == 0 || (has(self.days) && size(self.days) > 0)";
/// CEL rule of a maintenance window: `offsetDays` needs `weeksOfMonth`.
pub const OFFSET_NEEDS_WEEKS_RULE: &str = "!has(self.offsetDays) || self.offsetDays == 0 || (has(self.weeksOfMonth) && size(self.weeksOfMonth) > 0)";

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_time_zone() -> String {
    DEFAULT_TIME_ZONE.to_string()
}

/// An absolute range in which no routine work starts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.end > self.start").message("blackout end must be after its start"))]
pub struct Blackout {
    /// First instant of the blackout (RFC 3339, for example `2026-12-24T00:00:00+01:00`).
    /// Before 9999-12-30T00:00:00Z.
    #[x_kube(validation = Rule::new(LATEST_INSTANT_RULE).message(LATEST_INSTANT_MESSAGE))]
    pub start: Time,
    /// End of the blackout, exclusive (RFC 3339). Before 9999-12-30T00:00:00Z:
    /// for a blackout without end use a date such as `9999-01-01T00:00:00Z`.
    #[x_kube(validation = Rule::new(LATEST_INSTANT_RULE).message(LATEST_INSTANT_MESSAGE))]
    pub end: Time,
    /// Why, shown in status while the blackout holds work back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reason: Option<String>,
}

/// Announcement ahead of routine work.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Announce {
    /// Minimum time between the announcement (when the revision is first seen) and
    /// the first node starting, for example `48h`.
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub lead_time: String,
}

/// Pace and order of the rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Most selected nodes that may be unavailable at once: an integer, or a
    /// percentage of the selected nodes such as `25%` (rounded down, at least 1).
    /// Nodes count as unavailable when NotReady, unschedulable (cordoned by anyone)
    /// or in progress.
    #[serde(default = "default_max_unavailable")]
    #[x_kube(validation = Rule::new(MAX_UNAVAILABLE_RULE).message("maxUnavailable must be an integer from 1 to 2147483647 or a percentage from 1% to 100%; a number in quotes such as \"3\" is not accepted, write 3"))]
    pub max_unavailable: IntOrString,
    /// Order in which nodes are processed.
    #[serde(default)]
    pub order: OrderSpec,
    /// After a node is back (Ready with a new boot ID), wait this long before it
    /// counts as done and the next node may use its slot. Default `2m`.
    #[serde(default = "default_settle")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub settle: String,
    /// Failed nodes tolerated; one more halts the rollout (phase Halted, condition
    /// Stalled) until the revision changes. Default 0.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2147483647))]
    pub max_failed_nodes: u32,
    /// A node starts only when the open window has at least this much time left.
    /// Default: drain timeout + reboot timeout + settle (+ patch timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub min_window_remaining: Option<String>,
    /// Standing policies (`trigger: RebootRequired`): the least time from the
    /// start of one round to the start of the next, for example `24h`.
    /// Default `0s`. Urgent rounds ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub min_round_interval: Option<String>,
    /// Labels sofort puts on each node while it is maintained (set before its
    /// drain starts, removed with its uncordon), for load-balancer exclusion or
    /// alert inhibition. See `docs/quiet-drains.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_labels: Option<NodeLabelsSpec>,
}

/// Most labels `spec.rollout.nodeLabels.during` may hold.
pub const MAX_DURING_LABELS: usize = 16;

/// Labels on a node during its maintenance.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeLabelsSpec {
    /// Label key → value, set on the node (with its cordon) before its drain
    /// starts and removed with its uncordon, for example
    /// `node.kubernetes.io/exclude-from-external-load-balancers: "true"`. A
    /// label the node already carries is left as it is and never removed.
    /// Keys under `sofort.dev/`, `kubernetes.io/`, `k8s.io/` (and their
    /// subdomains such as `node-role.kubernetes.io/`) are refused, except
    /// `node.kubernetes.io/exclude-from-external-load-balancers` and
    /// `node.kubernetes.io/exclude-disruption`. At most 16.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 16), inner(length(max = 63)))]
    pub during: std::collections::BTreeMap<String, String>,
    /// After setting the labels, wait this long before the drain begins (load
    /// balancers deregister the node). Default `0s`; the node is cordoned
    /// during the wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub wait_after_set: Option<String>,
}

fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(DEFAULT_MAX_UNAVAILABLE)
}

fn default_settle() -> String {
    DEFAULT_SETTLE.to_string()
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            max_unavailable: default_max_unavailable(),
            order: OrderSpec::default(),
            settle: default_settle(),
            max_failed_nodes: 0,
            min_window_remaining: None,
            min_round_interval: None,
            node_labels: None,
        }
    }
}

/// Order of nodes: groups one after another, sorted inside each group.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OrderSpec {
    /// Node label whose value forms groups (for example
    /// `topology.kubernetes.io/zone`). A group finishes before the next starts;
    /// groups go in sorted order, nodes without the label last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 317))]
    pub group_by: Option<String>,
    /// Node label keys sorting nodes inside a group, compared numerically when
    /// both values are numbers (`2` before `10`); ties by node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 317)))]
    pub sort_by: Vec<String>,
}

/// What to do with pods that still have not left when the drain times out.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnTimeout {
    /// Uncordon the node (if sofort cordoned it) and mark it failed, naming the
    /// blocking pods and PodDisruptionBudgets.
    #[default]
    Fail,
    /// Delete the remaining pods, bypassing PodDisruptionBudgets, and go on.
    Force,
}

/// Drain settings, with the semantics of `kubectl drain`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// Deadline for evicting every pod from one node. Default `15m`.
    #[serde(default = "default_drain_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub timeout: String,
    /// Grace period given to each evicted pod; unset uses the pod's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub grace_period_seconds: Option<i64>,
    /// Also evict pods using emptyDir volumes (their data is lost). Default true.
    #[serde(default = "default_true")]
    pub delete_empty_dir_data: bool,
    /// Also evict pods that no controller will recreate. Default false.
    #[serde(default)]
    pub force: bool,
    /// Evict only pods matching this selector (as `kubectl drain --pod-selector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// What happens when the timeout passes with pods left: `Fail` (default) or `Force`.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

fn default_drain_timeout() -> String {
    DEFAULT_DRAIN_TIMEOUT.to_string()
}

fn default_true() -> bool {
    true
}

impl Default for DrainSpec {
    fn default() -> Self {
        DrainSpec {
            timeout: default_drain_timeout(),
            grace_period_seconds: None,
            delete_empty_dir_data: true,
            force: false,
            pod_selector: None,
            on_timeout: OnTimeout::Fail,
        }
    }
}

/// Which nodes reboot.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RebootWhen {
    /// Every selected node reboots once per revision.
    #[default]
    Always,
    /// Only nodes whose agent reports `sofort.dev/reboot-required=true`; the others
    /// are done at once, without cordon or drain.
    IfRequired,
}

/// Reboot settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RebootSpec {
    /// `Always` (default) or `IfRequired`.
    #[serde(default)]
    pub when: RebootWhen,
    /// A node must be Ready with a new boot ID within this time after the reboot
    /// was requested, or it is marked failed. Default `20m`.
    #[serde(default = "default_reboot_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub timeout: String,
}

fn default_reboot_timeout() -> String {
    DEFAULT_REBOOT_TIMEOUT.to_string()
}

impl Default for RebootSpec {
    fn default() -> Self {
        RebootSpec {
            when: RebootWhen::Always,
            timeout: default_reboot_timeout(),
        }
    }
}

/// Host command run by the node agent before the reboot.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PatchSpec {
    /// Program and arguments, run in the host's namespaces (no shell).
    #[schemars(length(min = 1, max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,
    /// The command is killed and the node marked failed after this. Default `30m`.
    #[serde(default = "default_patch_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub timeout: String,
}

fn default_patch_timeout() -> String {
    DEFAULT_PATCH_TIMEOUT.to_string()
}

/// Notifications to people outside the cluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NotifySpec {
    /// Where notifications are sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub webhooks: Vec<Webhook>,
    /// What the maintenance is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisory: Option<Advisory>,
    /// Show this policy's rollouts on the public status page (the controller's
    /// `--status-addr` listener). Off by default: a policy is public only when
    /// this is `true`. The page shows the public title, the advisory summary,
    /// a count of servers and times, and the advisory details only once every
    /// selected node is updated; never policy, node or pod names.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub status_page: bool,
    /// Title of this policy's rollouts on the status page and in e-mail
    /// subjects, for example `Web hosting`. Default: the advisory summary, else
    /// `Server maintenance`. Public: it must not contain the embargoed details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub public_title: Option<String>,
}

/// Payload format of a webhook.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// CloudEvents 1.0, structured JSON.
    #[default]
    CloudEvents,
    /// Slack incoming-webhook message.
    Slack,
    /// Microsoft Teams Workflows webhook ("When a Teams webhook request is
    /// received"): a message with one Adaptive Card 1.4 attachment.
    Teams,
    /// Any JSON API: `template` is a JSON document whose string values may use
    /// the template variables; each is filled in (JSON-escaped) per notification.
    Generic,
    /// E-mail over SMTP. The Secret key of `urlSecretRef` holds
    /// `smtps://user:password@host:465` (TLS) or `smtp://user:password@host:587`
    /// (STARTTLS, required); `email` names sender and recipients.
    Email,
}

/// A webhook receiver. Its URL lives in a Secret, never in the spec.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Name used in status, Events and metrics.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Secret key holding the URL.
    pub url_secret_ref: SecretKeyRef,
    /// `CloudEvents` (default) or `Slack`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Optional Secret key holding extra HTTP headers, one `Name: value` per line
    /// (for example an Authorization header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretKeyRef>,
    /// Optional Secret key holding a PEM CA bundle to trust for this receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
    /// Optional message template replacing the default text; see the notification
    /// docs for the variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub template: Option<String>,
    /// Sender and recipients, for `format: Email` (required there, refused
    /// for the other formats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSpec>,
    /// Who reads this channel: `Customers` (default) or `Admins`. Only an
    /// admin channel may subscribe to `nodeEvents`, which name nodes.
    #[serde(default, skip_serializing_if = "Audience::is_customers")]
    pub audience: Audience,
    /// Per-node progress notices for an admin channel (`audience: Admins`):
    /// `NodeDraining`, `NodeRebooting`, `NodeUncordoned`. Off by default.
    /// Decided once per node, step and revision when the controller's write
    /// entering the step succeeds; delivered best effort (see the
    /// notification docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub node_events: Vec<NodeEvent>,
}

// --- Per-node progress notices for admin channels ---

/// Who reads a notification channel.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Audience {
    /// Customers: rollout notices only, never per-node progress.
    #[default]
    Customers,
    /// The operators: may also get per-node progress (`nodeEvents`), which
    /// names the nodes.
    Admins,
}

impl Audience {
    /// True for the default, `Customers`.
    pub fn is_customers(&self) -> bool {
        *self == Audience::Customers
    }
}

/// A per-node progress notice (kured's three), for admin channels.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum NodeEvent {
    /// The node was cordoned and its pods are being evicted.
    NodeDraining,
    /// The node was asked to reboot.
    NodeRebooting,
    /// The node is back, released and made schedulable again.
    NodeUncordoned,
}

// --- end per-node progress notices ---

/// Sender and recipients of an e-mail channel.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailSpec {
    /// Sender address, for example `Example Hosting <status@example.com>`.
    #[schemars(length(min = 3, max = 254))]
    pub from: String,
    /// Recipient addresses (a customer list address, for example).
    #[schemars(length(min = 1, max = 50))]
    pub to: Vec<String>,
}

/// Health gates. A gate whose check fails (endpoint unreachable, bad answer)
/// counts as closed and says so.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatesSpec {
    /// Prometheus: firing alerts and PromQL queries that hold new starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusGate>,
    /// Alertmanager: whether its silences count, and silences for the nodes in
    /// maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerGate>,
    /// Pods that hold their node (and with it its group) while they run there,
    /// for example a backup job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub blocking_pods: Vec<BlockingPodsGate>,
    /// Workloads that must be healthy (kstatus rules) after each node's settle
    /// before the node counts as done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub workloads: Vec<WorkloadGate>,
    /// A gate closed longer than this triggers `onTimeout`. Unset: wait
    /// without limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"), length(max = 64))]
    pub timeout: Option<String>,
    /// `Halt` (default: phase Stalled, admins told) or `Continue` (go on as if
    /// the gate were open).
    #[serde(default)]
    pub on_timeout: GateTimeoutAction,
    /// With `urgent: true`, skip the Prometheus and blocking-pod gates. The
    /// budget and PodDisruptionBudgets always hold.
    #[serde(default)]
    pub skip_when_urgent: bool,
}

/// What to do when a gate stays closed longer than `gates.timeout`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GateTimeoutAction {
    /// Start no more nodes (phase Stalled) and tell the admins.
    #[default]
    Halt,
    /// Go on as if the gate were open.
    Continue,
}

/// A Prometheus server whose alerts and queries gate the rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.urlSecretRef)").message("give exactly one of url and urlSecretRef"))]
pub struct PrometheusGate {
    /// Base URL, for example `http://prometheus.monitoring:9090`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// Secret key holding the base URL (same consent rule as webhook Secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding a PEM CA bundle to trust for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
    /// Hold new starts while a matching alert fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsGate>,
    /// Each holds new starts while its PromQL returns any series.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub queries: Vec<QueryGate>,
}

/// Which firing alerts hold new starts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AlertsGate {
    /// Regular expressions on `alertname`, anchored as in Prometheus; an empty
    /// list means any firing alert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub names: Vec<String>,
    /// Label values that never block, such as `severity: [info, none]`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ignore: std::collections::BTreeMap<String, Vec<String>>,
}

/// A PromQL query that holds new starts while it returns any series.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueryGate {
    /// Name used in status, Events and metrics.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The PromQL expression, written as an alert condition
    /// (`... > 5`).
    #[schemars(length(min = 1, max = 4096))]
    pub expr: String,
}

/// An Alertmanager whose silences count, and which silences the alerts of the
/// nodes in maintenance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.urlSecretRef)").message("give exactly one of url and urlSecretRef"))]
pub struct AlertmanagerGate {
    /// Base URL, for example `http://alertmanager.monitoring:9093`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// Secret key holding the base URL (same consent rule as webhook Secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding a PEM CA bundle to trust for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
    /// A firing alert that an active silence matches does not block (silences
    /// sofort made for maintenance never unblock).
    #[serde(default)]
    pub respect_silences: bool,
    /// One silence per node in progress, expired when the node is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_during_maintenance: Option<MaintenanceSilence>,
}

/// The silence made for each node in progress.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceSilence {
    /// Matchers in Alertmanager's syntax (`label=~"value"`, also `=`, `!=`,
    /// `!~`); `{node}` stands for the node's name.
    #[schemars(length(min = 1, max = 16))]
    pub matchers: Vec<String>,
}

/// Pods that hold their node while they run on it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlockingPodsGate {
    /// Namespace searched; unset: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Which pods.
    pub selector: LabelSelector,
}

/// A workload that must be healthy after each node's settle.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadGate {
    /// API version, for example `apps/v1`.
    #[schemars(length(min = 1, max = 253))]
    pub api_version: String,
    /// Kind, for example `StatefulSet`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Namespace; unset for a cluster-scoped kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Reference to one key of a Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// What the maintenance is about.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Advisory {
    /// Public one-line summary, in every notification.
    #[schemars(length(max = 512))]
    pub summary: String,
    /// Embargoed details (CVE ids, description): only in the Completed
    /// notification, never in Events, logs or status before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub details: Option<String>,
    /// When the details leave the embargo. `WhenAllPatched` (default): with the
    /// `Completed` notification, only once every selected node is updated; a
    /// failed or skipped node keeps them embargoed. `Now`: an admin lifts the
    /// embargo; the details go out with the `Completed` notification even if
    /// nodes failed (at once, if the rollout has already ended).
    #[serde(default)]
    pub release: AdvisoryRelease,
}

/// When the advisory details may be published.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AdvisoryRelease {
    /// Once every selected node of the revision is updated.
    #[default]
    WhenAllPatched,
    /// Now: the embargo is lifted by an admin.
    Now,
}

/// Phase of the rollout of the current revision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Phase {
    /// Announced; waiting for the lead time to pass.
    #[default]
    Scheduled,
    /// Work remains but nothing may start now (closed window, blackout, budget).
    Waiting,
    /// Nodes are being processed.
    Progressing,
    /// `spec.paused` is set.
    Paused,
    /// Every selected node is at this revision.
    Completed,
    /// More nodes failed than `maxFailedNodes`, or the spec is invalid.
    Halted,
}

/// Where one node is in its update.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Step {
    /// Not started for this revision.
    #[default]
    Pending,
    /// Pods are being evicted.
    Draining,
    /// The host patch command runs.
    Patching,
    /// The agent was asked to reboot.
    Rebooting,
    /// Waiting for Ready with a new boot ID.
    WaitingReady,
    /// Back; waiting for `settle`.
    Settling,
    /// At this revision.
    Done,
    /// Failed for this revision.
    Failed,
}

impl Step {
    /// True while the node is taken out of service by the rollout.
    pub fn in_progress(self) -> bool {
        !matches!(self, Step::Pending | Step::Done | Step::Failed)
    }
}

/// Observed state of a PatchPolicy, written only by the controller.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PatchPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The revision this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Rollout phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// When the revision was first seen (start of the announce lead time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_at: Option<Time>,
    /// Earliest start: after the announce lead time, in the first usable window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_start: Option<Time>,
    /// The open or next usable maintenance window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<WindowStatus>,
    /// When the first node started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the last node finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Node counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,
    /// Nodes in progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ActiveNode>,
    /// Nodes that failed for this revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedNode>,
    /// Notifications sent for this revision (most recent last, bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationRecord>,
    /// The health gates of this policy: open or closed, since when, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateStatus>,
    /// The drainability pre-flight: which pods could not be evicted now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<PreflightStatus>,
    /// The last 10 completed rollouts, oldest first: one entry per rollout,
    /// appended when it completes (the public status page lists them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// `Ready`, `Reconciling` and `Stalled`, following kstatus conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One human sentence: what is happening, or why nothing is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Standing policies: the current round (absent with `trigger: Revision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<RoundStatus>,
    /// Standing policies: the round after the current one (absent with
    /// `trigger: Revision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_round: Option<NextRoundStatus>,
}

/// Phase of a round of a standing policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RoundPhase {
    /// Announced; no node has started yet.
    #[default]
    Scheduled,
    /// Nodes of the round are being processed.
    Running,
    /// Every member is done, not needed, failed or gone.
    Completed,
}

/// One round of a standing policy: the nodes due when it was planned.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoundStatus {
    /// Round id such as `r3-20261202` (count, then the UTC day it was
    /// planned); node records, notifications and CloudEvents ids carry it.
    pub id: String,
    /// The members: nodes due when the round was planned, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// `Scheduled`, `Running` or `Completed`.
    pub phase: RoundPhase,
    /// Earliest start: after the announce lead time and `minRoundInterval`,
    /// in the first usable window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_start: Option<Time>,
    /// When its first node started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When its last node finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Members whose Node was deleted: their slot is free, they are not
    /// counted as failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<String>,
    /// Planned after a change of `spec.revision`: covers every selected node,
    /// with `reboot.when` as written.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fleet_wide: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The round after the current one.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NextRoundStatus {
    /// When it could start if it were planned now: after the lead time and
    /// `minRoundInterval`, in the first usable window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_start: Option<Time>,
    /// Nodes due that are not in the current round.
    pub due: u32,
    /// The `spec.revision` the rounds have taken into account; a different
    /// `spec.revision` makes the next round cover every selected node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// `status.history` keeps this many completed rollouts.
pub const MAX_STATUS_HISTORY: usize = 10;

/// A completed rollout in `status.history`: counts and times only.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Which rollout: the revision it rolled out, or the id of a round.
    pub id: String,
    /// Whether it was urgent.
    #[serde(default)]
    pub urgent: bool,
    /// When its first node started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it completed.
    pub completed_at: Time,
    /// Nodes it selected.
    pub nodes: u32,
    /// Nodes that failed.
    #[serde(default)]
    pub failed: u32,
}

impl HistoryEntry {
    /// `history` with `entry` appended, once per id: an entry with the same
    /// id already there is kept as it is (a rollout completes once; a
    /// status written again, or read again after a restart, adds nothing).
    /// At most [`MAX_STATUS_HISTORY`] entries, the oldest dropped first.
    pub fn append(history: &[HistoryEntry], entry: HistoryEntry) -> Vec<HistoryEntry> {
        let mut out: Vec<HistoryEntry> = history.to_vec();
        if !out.iter().any(|h| h.id == entry.id) {
            out.push(entry);
        }
        let excess = out.len().saturating_sub(MAX_STATUS_HISTORY);
        out.drain(..excess);
        out
    }
}

/// One health gate's state.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    /// Which gate: `alerts`, `query NAME`, `blockingPods` or `workloads`.
    pub name: String,
    /// Whether it lets work go on.
    pub open: bool,
    /// Since when it is in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Why it is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The drainability pre-flight of a revision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreflightStatus {
    /// When it ran.
    pub checked_at: Time,
    /// The revision it ran for.
    pub revision: String,
    /// One sentence, for example `2 nodes would block: PDB shop/db allows 0 disruptions`.
    pub summary: String,
    /// The nodes that would block, each with why (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
}

/// A maintenance window instance.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WindowStatus {
    /// Opening instant.
    pub start: Time,
    /// Closing instant.
    pub end: Time,
}

/// Node counts of the current revision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// Selected nodes.
    pub total: u32,
    /// Nodes at this revision.
    pub updated: u32,
    /// Nodes being processed.
    pub in_progress: u32,
    /// Nodes not started.
    pub pending: u32,
    /// Nodes failed.
    pub failed: u32,
    /// `updated/total`, for `kubectl get`.
    pub summary: String,
}

/// A node in progress.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActiveNode {
    /// Node name.
    pub node: String,
    /// Current step.
    pub step: Step,
    /// When the step began.
    pub since: Time,
}

/// A node that failed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailedNode {
    /// Node name.
    pub node: String,
    /// What went wrong, naming blocking pods and PodDisruptionBudgets where known.
    pub reason: String,
}

/// A notification sent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// Event name (`Scheduled`, `Started`, `UrgentStarted`, `NodeFailed`, `Halted`,
    /// `Resumed`, `Completed`).
    pub event: String,
    /// When it was queued for delivery.
    pub at: Time,
    /// The node a `NodeFailed` notification is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Delivery result per webhook: `statuspage=pending`, then
    /// `statuspage=delivered` or `statuspage=failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<String>,
}

impl PatchPolicySpec {
    /// A minimal spec: every node, always open, one at a time.
    pub fn new(revision: impl Into<String>) -> Self {
        PatchPolicySpec {
            revision: revision.into(),
            trigger: Trigger::Revision,
            urgent: false,
            paused: false,
            paused_until: None,
            node_selector: LabelSelector::default(),
            maintenance_windows: Vec::new(),
            blackouts: Vec::new(),
            announce: None,
            rollout: RolloutSpec::default(),
            drain: DrainSpec::default(),
            reboot: RebootSpec::default(),
            patch: None,
            notify: None,
            gates: None,
        }
    }
}

/// Why a PatchPolicy object could not be decoded into the Rust types.
///
/// The message never repeats text of the object: serde's messages quote the
/// offending value (which may be an embargoed advisory), so the quoted parts
/// are cut and only the field path and what was expected remain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DecodeError {
    /// Field path such as `spec.blackouts[0].end`.
    pub path: String,
    /// What was wrong, without the value itself.
    pub message: String,
}

/// Longest decode message kept; serde's own messages are short.
const DECODE_MESSAGE_MAX: usize = 300;

/// Decodes one PatchPolicy from its JSON form, naming the field that does not
/// fit when it fails. One object's failure concerns only that object.
pub fn decode_policy(value: &serde_json::Value) -> Result<PatchPolicy, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "(object)".to_string()
        } else {
            path
        };
        DecodeError {
            path,
            message: redact_decode_message(&e.into_inner().to_string()),
        }
    })
}

/// Cuts quoted values (`"…"` and `` `…` ``) out of a serde message, keeping
/// what follows "expected" (that text comes from the types, not the input).
pub fn redact_decode_message(message: &str) -> String {
    // The field name of "missing field `x`" comes from the types.
    if message.starts_with("missing field") {
        return message.chars().take(DECODE_MESSAGE_MAX).collect();
    }
    let (given, expected) = match message.find("expected") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let mut out = String::with_capacity(given.len().min(DECODE_MESSAGE_MAX));
    let mut quote: Option<char> = None;
    for c in given.chars() {
        match quote {
            Some(q) if c == q => {
                out.push_str("(value)");
                quote = None;
            }
            Some(_) => {}
            None if c == '"' || c == '`' => quote = Some(c),
            None => out.push(c),
        }
    }
    if quote.is_some() {
        out.push_str("(value)");
    }
    out.push_str(expected);
    if out.len() > DECODE_MESSAGE_MAX {
        let mut end = DECODE_MESSAGE_MAX;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    // A parse error of a timestamp says why, but not always in quotes.
    if out.contains("parse") && out.contains("timestamp") || out.contains("datetime") {
        return format!(
            "not a timestamp the controller can hold; use RFC 3339 before {LATEST_INSTANT}"
        );
    }
    out
}

#[cfg(test)]
mod cel_tests {
    //! The CEL rules of the CRD, evaluated locally the way the API server does.
    use super::*;

    fn policy() -> PatchPolicy {
        PatchPolicy::new("p", PatchPolicySpec::new("r1"))
    }

    #[test]
    fn defaults_pass_every_rule() {
        assert!(
            policy().validate_cel().is_ok(),
            "{:?}",
            policy().validate_cel()
        );
    }

    #[test]
    fn revision_may_be_empty_only_on_a_standing_policy() {
        let mut p = policy();
        p.spec.revision = String::new();
        assert!(p.validate_cel().is_err());
        p.spec.trigger = Trigger::RebootRequired;
        assert!(p.validate_cel().is_ok(), "{:?}", p.validate_cel());
        p.spec.revision = "2026-12".into();
        assert!(p.validate_cel().is_ok());
    }

    #[test]
    fn max_unavailable_rule() {
        for ok in [
            IntOrString::Int(1),
            IntOrString::Int(40),
            IntOrString::String("25%".into()),
            IntOrString::String("100%".into()),
            IntOrString::Int(i32::MAX),
        ] {
            let mut p = policy();
            p.spec.rollout.max_unavailable = ok.clone();
            assert!(p.validate_cel().is_ok(), "{ok:?} should pass");
        }
        for bad in [
            IntOrString::Int(0),
            IntOrString::Int(-1),
            IntOrString::String("0%".into()),
            IntOrString::String("150%".into()),
            IntOrString::String("half".into()),
            IntOrString::String("3".into()),
        ] {
            let mut p = policy();
            p.spec.rollout.max_unavailable = bad.clone();
            assert!(p.validate_cel().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn window_start_must_differ_from_end_except_full_day() {
        let w = |s: &str, e: &str| MaintenanceWindow {
            days: vec![],
            start: s.into(),
            end: e.into(),
            time_zone: "UTC".into(),
            weeks_of_month: Vec::new(),
            offset_days: 0,
        };
        let mut p = policy();
        p.spec.maintenance_windows = vec![w("22:00", "05:00"), w("00:00", "00:00")];
        assert!(p.validate_cel().is_ok());
        p.spec.maintenance_windows = vec![w("10:00", "10:00")];
        assert!(p.validate_cel().is_err());
    }

    #[test]
    fn blackout_must_end_after_start() {
        let t = |s: &str| Time(s.parse().unwrap());
        let mut p = policy();
        p.spec.blackouts = vec![Blackout {
            start: t("2026-12-24T00:00:00Z"),
            end: t("2026-12-27T00:00:00Z"),
            reason: None,
        }];
        assert!(p.validate_cel().is_ok(), "{:?}", p.validate_cel());
        p.spec.blackouts[0].end = t("2026-12-23T00:00:00Z");
        assert!(p.validate_cel().is_err());
    }

    #[test]
    fn blackout_instants_stay_within_what_the_controller_can_hold() {
        let t = |s: &str| Time(s.parse().unwrap());
        let mut p = policy();
        p.spec.blackouts = vec![Blackout {
            start: t("2026-12-24T00:00:00Z"),
            end: t("9999-01-01T00:00:00Z"),
            reason: None,
        }];
        assert!(p.validate_cel().is_ok(), "{:?}", p.validate_cel());
        p.spec.blackouts[0].end = t("9999-12-30T12:00:00Z");
        assert!(p.validate_cel().is_err());
    }
}
