//! The e-mail channel: notifications sent over SMTP with TLS (`smtps://`,
//! implicit TLS, usually port 465) or STARTTLS (`smtp://`, required: a
//! server that does not offer it is refused, never used in plain text),
//! with the credentials from the webhook's Secret.
//!
//! The Secret key of `urlSecretRef` holds the server as a URL,
//! `smtps://user:password@mail.example.com:465`; user and password are
//! percent-encoded where they contain `@`, `:` or `/`. The optional
//! `caBundleSecretRef` adds CA certificates to the system roots.

use std::fmt;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::render::Payload;

/// How the connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (`smtps://`).
    Tls,
    /// Plain text upgraded with STARTTLS before anything else (`smtp://`).
    StartTls,
}

/// An SMTP server and the envelope of a channel, parsed and checked.
#[derive(Clone)]
pub struct EmailTarget {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<(String, String)>,
    from: Mailbox,
    to: Vec<Mailbox>,
    ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for EmailTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Host and credentials come from the Secret: never printed.
        f.debug_struct("EmailTarget")
            .field("security", &self.security)
            .field("recipients", &self.to.len())
            .finish_non_exhaustive()
    }
}

/// Why an e-mail channel is unusable. Never quotes the URL or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// The URL is not `smtp://` or `smtps://` with a host.
    #[error(
        "the server URL in its Secret is not smtps://[user:password@]host[:port] or smtp://[user:password@]host[:port] (STARTTLS); store for example smtps://status%40example.com:secret@mail.example.com:465"
    )]
    InvalidUrl,
    /// An address does not parse.
    #[error("email.{field}: {index_text}is not an e-mail address such as Example Hosting <status@example.com>", index_text = index.map(|i| format!("entry {i} ")).unwrap_or_default())]
    InvalidAddress {
        /// `from` or `to`.
        field: &'static str,
        /// The entry of `to`.
        index: Option<usize>,
    },
    /// `format: Email` without `email`, or `email` on another format.
    #[error(
        "format Email needs `email` with `from` and `to`, and only format Email may have it; add or remove the field"
    )]
    Envelope,
    /// The CA bundle is unusable.
    #[error(
        "the CA bundle in its Secret is not PEM certificates; store -----BEGIN CERTIFICATE----- blocks"
    )]
    InvalidCa,
}

/// True when `s` is an address lettre can send to (`Name <a@b.example>` or `a@b.example`).
pub fn is_address(s: &str) -> bool {
    s.parse::<Mailbox>().is_ok()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl EmailTarget {
    /// Parses the server URL from the Secret and the envelope from the spec.
    pub fn new(
        url: &str,
        spec: Option<&crate::api::EmailSpec>,
        ca_pem: Option<&[u8]>,
    ) -> Result<EmailTarget, EmailError> {
        let spec = spec.ok_or(EmailError::Envelope)?;
        let url = url.trim();
        let (security, rest, default_port) = if let Some(r) = url.strip_prefix("smtps://") {
            (Security::Tls, r, 465)
        } else if let Some(r) = url.strip_prefix("smtp://") {
            (Security::StartTls, r, 587)
        } else {
            return Err(EmailError::InvalidUrl);
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let credentials = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user).ok_or(EmailError::InvalidUrl)?;
                let pass = percent_decode(pass).ok_or(EmailError::InvalidUrl)?;
                Some((user, pass))
            }
            None => None,
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| EmailError::InvalidUrl)?)
            }
            _ => (hostport, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || host.contains(['/', '?', '#', ' ', '@'])
            || port == 0
            || hostport.contains(['/', '?', '#'])
        {
            return Err(EmailError::InvalidUrl);
        }
        let from: Mailbox = spec.from.parse().map_err(|_| EmailError::InvalidAddress {
            field: "from",
            index: None,
        })?;
        let to = spec
            .to
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.parse::<Mailbox>()
                    .map_err(|_| EmailError::InvalidAddress {
                        field: "to",
                        index: Some(i),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(EmailError::Envelope);
        }
        if let Some(pem) = ca_pem {
            Certificate::from_pem(pem).map_err(|_| EmailError::InvalidCa)?;
        }
        Ok(EmailTarget {
            host: host.to_string(),
            port,
            security,
            credentials,
            from,
            to,
            ca_pem: ca_pem.map(<[u8]>::to_vec),
        })
    }

    /// How the connection is secured.
    pub fn security(&self) -> Security {
        self.security
    }

    fn transport(&self, timeout: Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let mut tls = TlsParameters::builder(self.host.clone());
        if let Some(pem) = &self.ca_pem {
            // Every certificate of the bundle (lettre takes one at a time).
            for block in pem_blocks(pem) {
                let cert = Certificate::from_pem(block.as_bytes())
                    .map_err(|_| "the CA bundle could not be read".to_string())?;
                tls = tls.add_root_certificate(cert);
            }
        }
        let tls = tls
            .build_rustls()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.clone())
            .port(self.port)
            .timeout(Some(timeout))
            .tls(match self.security {
                Security::Tls => Tls::Wrapper(tls),
                Security::StartTls => Tls::Required(tls),
            });
        if let Some((u, p)) = &self.credentials {
            // PLAIN, always inside TLS here; every server offers it.
            b = b
                .credentials(Credentials::new(u.clone(), p.clone()))
                .authentication(vec![Mechanism::Plain]);
        }
        Ok(b.build())
    }

    /// The MIME message of `payload` (subject and text body), with a
    /// `Message-ID` derived from the notification id, so a resent
    /// notification carries the same one.
    pub fn message(&self, id: &str, payload: &Payload) -> Result<lettre::Message, String> {
        let mut to = Mailboxes::new();
        for m in &self.to {
            to.push(m.clone());
        }
        let digest = super::status_page::short_hash(id);
        let domain = self
            .from
            .email
            .domain()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            .collect::<String>();
        lettre::Message::builder()
            .from(self.from.clone())
            .mailbox(lettre::message::header::To::from(to))
            .subject(payload.subject.clone().unwrap_or_default())
            .message_id(Some(format!("<{digest}.sofort@{domain}>")))
            .header(ContentType::TEXT_PLAIN)
            .body(String::from_utf8_lossy(&payload.body).into_owned())
            .map_err(|e| format!("the e-mail could not be built: {e}"))
    }
}

fn pem_blocks(pem: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// What one SMTP attempt gave.
pub enum SendResult {
    /// Accepted (the SMTP reply code).
    Accepted(u16),
    /// Worth another attempt (connection, timeout, 4xx).
    Transient(String),
    /// Refused for good (5xx, bad message).
    Permanent(String),
}

/// Sends `payload` to `target` once, within `timeout` per SMTP command.
pub async fn send(
    target: &EmailTarget,
    id: &str,
    payload: &Payload,
    timeout: Duration,
) -> SendResult {
    let transport = match target.transport(timeout) {
        Ok(t) => t,
        Err(e) => return SendResult::Permanent(e),
    };
    let message = match target.message(id, payload) {
        Ok(m) => m,
        Err(e) => return SendResult::Permanent(e),
    };
    // The whole conversation is bounded too, not only each command.
    match tokio::time::timeout(timeout.saturating_mul(6), transport.send(message)).await {
        Err(_) => {
            SendResult::Transient(format!("no answer within {:?}", timeout.saturating_mul(6)))
        }
        Ok(Ok(r)) => SendResult::Accepted(u16::from(r.code())),
        Ok(Err(e)) if e.is_permanent() => SendResult::Permanent(format!(
            "the mail server refused the message ({}); check the sender, recipients and credentials",
            e.status()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "permanent error".into())
        )),
        // No STARTTLS offered, or a certificate that is not trusted: the same
        // on every attempt, and never sent in plain text.
        Ok(Err(e)) if e.is_tls() || e.is_client() => SendResult::Permanent(format!(
            "{}; the server must offer TLS (smtps://) or STARTTLS (smtp://) with a certificate trusted by the system or the caBundleSecretRef",
            scrub_error(&e, target)
        )),
        Ok(Err(e)) => SendResult::Transient(scrub_error(&e, target)),
    }
}

/// The error text without the host or credentials from the Secret.
fn scrub_error(e: &lettre::transport::smtp::Error, target: &EmailTarget) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s = s.replace(&target.host, "(server)");
    if let Some((u, p)) = &target.credentials {
        if !u.is_empty() {
            s = s.replace(u.as_str(), "(user)");
        }
        if !p.is_empty() {
            s = s.replace(p.as_str(), "(password)");
        }
    }
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EmailSpec;

    fn spec() -> EmailSpec {
        EmailSpec {
            from: "Example Hosting <status@example.com>".into(),
            to: vec!["customers@example.com".into()],
        }
    }

    #[test]
    fn parses_server_urls() {
        let t = EmailTarget::new(
            "smtps://status%40example.com:p%3Ass@mail.example.com",
            Some(&spec()),
            None,
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.security),
            ("mail.example.com", 465, Security::Tls)
        );
        assert_eq!(
            t.credentials,
            Some(("status@example.com".to_string(), "p:ss".to_string()))
        );
        let t = EmailTarget::new("smtp://127.0.0.1:2525", Some(&spec()), None).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.security),
            ("127.0.0.1", 2525, Security::StartTls)
        );
        assert!(t.credentials.is_none());
        assert!(!format!("{t:?}").contains("127.0.0.1"));
        for bad in [
            "http://mail.example.com",
            "smtp://",
            "smtp://host:x",
            "smtp://host:0",
            "smtps://a@",
            "smtp://host/path",
        ] {
            assert_eq!(
                EmailTarget::new(bad, Some(&spec()), None).unwrap_err(),
                EmailError::InvalidUrl,
                "{bad}"
            );
        }
        assert_eq!(
            EmailTarget::new("smtp://h", None, None).unwrap_err(),
            EmailError::Envelope
        );
        let mut s = spec();
        s.to.push("not an address".into());
        assert_eq!(
            EmailTarget::new("smtp://h", Some(&s), None).unwrap_err(),
            EmailError::InvalidAddress {
                field: "to",
                index: Some(1)
            }
        );
    }
}
