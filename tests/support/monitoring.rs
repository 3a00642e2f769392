//! Test helper: the real Prometheus, Alertmanager and Pushgateway (Debian's
//! packages, installed by `scripts/setup-test-tools.sh`) on free 127.0.0.1
//! ports, with a rule file the test writes and one-second scrape and
//! evaluation intervals. Each start waits for readiness with a bound; the
//! processes are killed when the [`Monitoring`] is dropped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one service may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Attempts with fresh ports when a service does not come up (a port taken
/// between choosing and binding it).
const ATTEMPTS: usize = 3;

/// A running service.
pub struct Service {
    /// `127.0.0.1:port`.
    pub addr: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or("").to_string()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus scraping the Pushgateway and alerting to Alertmanager.
pub struct Monitoring {
    /// Prometheus.
    pub prometheus: Service,
    /// Alertmanager.
    pub alertmanager: Service,
    /// Pushgateway.
    pub pushgateway: Service,
    // Dropped last: the services' files.
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// One HTTP/1.0 request to `addr`; returns the status and the body. Bounded
/// by a 5-second timeout per read and write.
pub fn http(method: &str, addr: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = Vec::new();
    s.take(16 << 20).read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

fn start(program: &str, args: &[String], addr: &str, dir: &Path) -> Result<Service, String> {
    let log = dir.join(format!("{}-{}.log", program, addr.replace([':', '.'], "_")));
    let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| {
            format!("{program} could not be started ({e}); run scripts/setup-test-tools.sh")
        })?;
    let mut svc = Service {
        addr: addr.to_string(),
        child,
        log,
    };
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok((200, _)) = http("GET", addr, "/-/ready", "") {
            return Ok(svc);
        }
        if let Ok(Some(status)) = svc.child.try_wait() {
            return Err(format!("{program} exited ({status}):\n{}", svc.log_tail()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{program} not ready within {READY_WITHIN:?}:\n{}",
                svc.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `program` on a fresh port, retrying with new ports.
fn start_on_free_port(program: &str, dir: &Path, args: impl Fn(&str) -> Vec<String>) -> Service {
    let mut errors = Vec::new();
    for _ in 0..ATTEMPTS {
        let addr = format!("127.0.0.1:{}", free_port());
        match start(program, &args(&addr), &addr, dir) {
            Ok(s) => return s,
            Err(e) => errors.push(e),
        }
    }
    panic!("{program} did not start: {}", errors.join("\n---\n"));
}

impl Monitoring {
    /// Starts the three services; `rules` is the Prometheus rule file
    /// (YAML, `groups:`), checked by the server at start.
    pub fn start(rules: &str) -> Monitoring {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let d = dir.path();
        std::fs::write(
            d.join("alertmanager.yml"),
            "route:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: none\n",
        )
        .expect("alertmanager config written");
        let alertmanager = start_on_free_port("prometheus-alertmanager", d, |addr| {
            vec![
                format!("--config.file={}", d.join("alertmanager.yml").display()),
                format!("--storage.path={}", d.join("am-data").display()),
                format!("--web.listen-address={addr}"),
                "--cluster.listen-address=".into(),
                "--log.level=warn".into(),
            ]
        });
        let pushgateway = start_on_free_port("prometheus-pushgateway", d, |addr| {
            vec![
                format!("--web.listen-address={addr}"),
                "--log.level=warn".into(),
            ]
        });
        std::fs::write(d.join("rules.yml"), rules).expect("rule file written");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\n\
             alerting:\n  alertmanagers:\n    - static_configs: [{{targets: ['{am}']}}]\n\
             scrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n    static_configs: [{{targets: ['{pg}']}}]\n",
            am = alertmanager.addr,
            pg = pushgateway.addr,
        );
        std::fs::write(d.join("prometheus.yml"), config).expect("prometheus config written");
        let prometheus = start_on_free_port("prometheus", d, |addr| {
            vec![
                format!("--config.file={}", d.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", d.join("prom-data").display()),
                format!("--web.listen-address={addr}"),
                "--log.level=warn".into(),
            ]
        });
        Monitoring {
            prometheus,
            alertmanager,
            pushgateway,
            _dir: dir,
        }
    }

    /// Pushes `metric value` (a gauge) under job `job` and instance
    /// `instance`: the series carries both labels.
    pub fn push(&self, job: &str, instance: &str, metric: &str, value: f64) {
        let body = format!("# TYPE {metric} gauge\n{metric} {value}\n");
        let path = format!("/metrics/job/{job}/instance/{instance}");
        let (status, text) =
            http("PUT", &self.pushgateway.addr, &path, &body).expect("pushgateway reachable");
        assert!((200..300).contains(&status), "push failed: {status} {text}");
    }

    /// Deletes what was pushed under `job` and `instance`.
    pub fn clear(&self, job: &str, instance: &str) {
        let path = format!("/metrics/job/{job}/instance/{instance}");
        let (status, text) =
            http("DELETE", &self.pushgateway.addr, &path, "").expect("pushgateway reachable");
        assert!(
            (200..300).contains(&status),
            "clear failed: {status} {text}"
        );
    }
}

/// Waits (bounded by `within`) until `check` returns `Some`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
