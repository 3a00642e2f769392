//! `sofort status` and the live view of `sofort sandbox`: per policy a
//! progress bar with updated/total and the forecast completion, the nodes by
//! group as coloured cells by step, the reason work waits, recent Events.
//!
//! Three parts: [`gather`] reads one [`Snapshot`] from the cluster (the only
//! part with a client); [`model::build`] turns it into a [`Screen`] (pure);
//! `render::draw` (feature `tui`) paints it full-screen, [`model::plain_lines`]
//! prints it as lines when stdout is not a terminal or with `--plain`.

pub mod model;
#[cfg(feature = "tui")]
pub mod render;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};

use crate::api::PatchPolicy;
use crate::cli::StatusArgs;
use crate::core::duration;
use crate::core::forecast::Assumptions;
pub use model::{EventLine, Screen, Snapshot};

/// Most Events read per refresh.
const EVENT_LIST_LIMIT: u32 = 500;

/// A problem showing the status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Reading from the cluster.
    #[error(
        "cannot read from the cluster: {0}; check KUBECONFIG and that the PatchPolicy CRD is installed"
    )]
    Cluster(String),
    /// The terminal.
    #[error("cannot use the terminal: {0}; try --plain")]
    Terminal(#[source] std::io::Error),
    /// A bad flag value.
    #[error("{0}")]
    Usage(String),
}

/// How the view runs.
#[derive(Debug, Clone)]
pub struct ViewConfig {
    /// Heading.
    pub title: String,
    /// Show only this policy.
    pub only: Option<String>,
    /// Time between refreshes.
    pub interval: Duration,
    /// Step durations the forecast assumes.
    pub assumptions: Assumptions,
    /// Stop once every shown policy is Completed or Halted.
    pub exit_when_settled: bool,
    /// Keep printing (plain mode); else print once.
    pub watch: bool,
}

/// How the view ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewEnd {
    /// The user pressed `q` (or the plain view printed once).
    Quit,
    /// Every shown policy settled (Completed or Halted).
    Settled,
}

fn event_line(e: &Event) -> Option<EventLine> {
    let regarding = e.regarding.as_ref()?;
    let kind = regarding.kind.as_deref()?;
    if kind != "PatchPolicy" && kind != "Node" {
        return None;
    }
    let at = e
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
    Some(EventLine {
        at,
        kind: e.type_.clone().unwrap_or_default(),
        reason: e.reason.clone().unwrap_or_default(),
        object: format!("{kind}/{}", regarding.name.as_deref().unwrap_or("")),
        note: e.note.clone().unwrap_or_default(),
    })
}

/// Reads the policies, the nodes and the recent Events. A policy that does
/// not decode is left out (the controller reports it in its own status).
pub async fn gather(client: &Client) -> Result<Snapshot, StatusError> {
    let ar = ApiResource::erase::<PatchPolicy>(&());
    let raw: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let policies = raw
        .list(&ListParams::default())
        .await
        .map_err(|e| StatusError::Cluster(format!("listing PatchPolicies: {e}")))?
        .items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .filter_map(|v| serde_json::from_value::<PatchPolicy>(v).ok())
        .collect();
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| StatusError::Cluster(format!("listing nodes: {e}")))?
        .items;
    // Events are a nicety: a cluster that refuses them still shows the rest.
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default().limit(EVENT_LIST_LIMIT))
        .await
        .map(|l| l.items.iter().filter_map(event_line).collect())
        .unwrap_or_default();
    Ok(Snapshot {
        policies,
        nodes,
        events,
    })
}

/// Gathers and builds one screen.
pub async fn screen(client: &Client, cfg: &ViewConfig) -> Result<Screen, StatusError> {
    let snap = gather(client).await?;
    Ok(model::build(
        &snap,
        &cfg.title,
        cfg.only.as_deref(),
        Timestamp::now(),
        cfg.assumptions,
    ))
}

/// Plain lines: once, or on every change until settled (when asked).
pub async fn run_plain(
    client: &Client,
    cfg: &ViewConfig,
    out: &mut (dyn Write + Send),
) -> Result<ViewEnd, StatusError> {
    let mut last: Vec<String> = Vec::new();
    let mut seen: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    loop {
        let mut s = screen(client, cfg).await?;
        // Watching, Events are printed once each, as they come, not with every frame.
        let events = if cfg.watch || cfg.exit_when_settled {
            std::mem::take(&mut s.events)
        } else {
            Vec::new()
        };
        let lines = model::plain_lines(&s);
        // The title carries the time: print when anything else changed.
        if lines.get(1..) != last.get(1..) {
            for l in &lines {
                let _ = writeln!(out, "{l}");
            }
            last = lines;
        }
        for e in events.iter().rev() {
            if !seen.contains(e) {
                let _ = writeln!(out, "event: {e}");
                seen.push_back(e.clone());
                if seen.len() > 4 * model::MAX_EVENTS {
                    seen.pop_front();
                }
            }
        }
        let _ = out.flush();
        if cfg.exit_when_settled && s.settled {
            return Ok(ViewEnd::Settled);
        }
        if !cfg.watch && !cfg.exit_when_settled {
            return Ok(ViewEnd::Quit);
        }
        tokio::time::sleep(cfg.interval).await;
    }
}

/// The full-screen view until `q` (or until settled, when asked). The
/// cluster is read every `interval` in the background; the screen redraws
/// at once on a key or a resize.
#[cfg(feature = "tui")]
pub async fn run_tui(client: Client, cfg: ViewConfig) -> Result<ViewEnd, StatusError> {
    let (tx, rx) = tokio::sync::watch::channel(None::<Screen>);
    let gcfg = cfg.clone();
    let gatherer = tokio::spawn(async move {
        loop {
            let s = match screen(&client, &gcfg).await {
                Ok(s) => s,
                Err(e) => Screen {
                    title: model::clean(&format!("{}  {e}", gcfg.title)),
                    policies: Vec::new(),
                    events: Vec::new(),
                    settled: false,
                },
            };
            if tx.send(Some(s)).is_err() {
                return;
            }
            tokio::time::sleep(gcfg.interval).await;
        }
    });
    let exit = cfg.exit_when_settled;
    let ui = tokio::task::spawn_blocking(move || ui_loop(rx, exit)).await;
    gatherer.abort();
    match ui {
        Ok(r) => r.map_err(StatusError::Terminal),
        Err(e) => Err(StatusError::Terminal(std::io::Error::other(e.to_string()))),
    }
}

#[cfg(feature = "tui")]
fn ui_loop(
    mut rx: tokio::sync::watch::Receiver<Option<Screen>>,
    exit_when_settled: bool,
) -> std::io::Result<ViewEnd> {
    use ratatui::crossterm::event::{self, Event as Term, KeyCode, KeyEventKind, KeyModifiers};
    let mut terminal = ratatui::try_init()?;
    let result = (|| loop {
        let s = rx.borrow_and_update().clone();
        if let Some(s) = &s {
            terminal.draw(|f| render::draw(f, s))?;
            if exit_when_settled && s.settled {
                return Ok(ViewEnd::Settled);
            }
        }
        if event::poll(Duration::from_millis(200))?
            && let Term::Key(k) = event::read()?
            && k.kind == KeyEventKind::Press
        {
            let ctrl_c =
                k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
            if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                return Ok(ViewEnd::Quit);
            }
        }
    })();
    ratatui::restore();
    result
}

/// Whether the full-screen view is used: a terminal on stdout, no `--plain`,
/// and the feature built in.
pub fn use_tui(plain: bool) -> bool {
    cfg!(feature = "tui") && !plain && std::io::stdout().is_terminal()
}

/// Shows `cfg` on stdout: the full-screen view when [`use_tui`], else plain lines.
pub async fn show(client: Client, cfg: ViewConfig, plain: bool) -> Result<ViewEnd, StatusError> {
    #[cfg(feature = "tui")]
    if use_tui(plain) {
        return run_tui(client, cfg).await;
    }
    let _ = plain;
    let mut out = std::io::stdout();
    run_plain(&client, &cfg, &mut out).await
}

fn parse_flag(flag: &str, s: &str) -> Result<Duration, StatusError> {
    duration::parse(s).map_err(|e| StatusError::Usage(format!("--{flag}: {e}")))
}

/// The view's settings from the command line.
pub fn view_config(args: &StatusArgs) -> Result<ViewConfig, StatusError> {
    Ok(ViewConfig {
        title: "sofort status".into(),
        only: args.policy.clone(),
        interval: parse_flag("interval", &args.interval)?.max(Duration::from_millis(100)),
        assumptions: Assumptions {
            drain: parse_flag("drain", &args.drain)?,
            reboot: parse_flag("reboot", &args.reboot)?,
            patch: parse_flag("patch", &args.patch)?,
        },
        exit_when_settled: false,
        watch: args.watch,
    })
}

/// Runs `sofort status`: exit 0, 1 when the cluster cannot be read, 2 on bad usage.
pub fn run_cli(args: &StatusArgs) -> ExitCode {
    let cfg = match view_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        let client = Client::try_default()
            .await
            .map_err(|e| StatusError::Cluster(e.to_string()))?;
        show(client, cfg, args.plain).await
    };
    match rt.block_on(run) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
