//! `kind = "email"`: SMTP through lettre, with STARTTLS (`tls = "starttls"`,
//! port 587), implicit TLS (`tls = "tls"`, port 465) or none (`tls =
//! "none"`, for a local relay), and optional authentication. The message is
//! plain text with the one-click acknowledge link; its Message-ID is fixed
//! per delivery, so a copy sent again after a crash is recognisably the same
//! (a test notification gets a new one each time).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::Notification;
use crate::config::alerts::{EmailConfig, SmtpTls};

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// Bounds the whole exchange (lettre's own timeout is per command).
    timeout: Duration,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    pub fn new(c: &EmailConfig) -> Result<Email, String> {
        let builder = match c.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.server)
                .map_err(|e| format!("SMTP server {}: {e}", c.server))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.server)
                .map_err(|e| format!("SMTP server {}: {e}", c.server))?,
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.server),
        };
        let mut builder = builder.port(c.port).timeout(Some(c.timeout));
        if let Some(ca) = &c.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            let params = TlsParameters::builder(c.server.clone())
                .add_root_certificate(cert)
                .build_rustls()
                .map_err(|e| format!("TLS setup for {}: {e}", c.server))?;
            builder = builder.tls(match c.tls {
                SmtpTls::Starttls => Tls::Required(params),
                SmtpTls::Tls => Tls::Wrapper(params),
                SmtpTls::None => Tls::None,
            });
        }
        if let Some(user) = &c.username {
            let password = match &c.password_file {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read password_file {}: {e}", p.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                None => String::new(),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let from = c
            .from
            .parse()
            .map_err(|e| format!("invalid `from` {}: {e}", c.from))?;
        let to =
            c.to.iter()
                .map(|t| t.parse().map_err(|e| format!("invalid `to` {t}: {e}")))
                .collect::<Result<_, _>>()?;
        Ok(Email {
            transport: builder.build(),
            timeout: c.timeout,
            from,
            to,
        })
    }

    pub async fn send(&self, n: &Notification) -> Result<(), String> {
        let mut m = Message::builder()
            .from(self.from.clone())
            .subject(n.subject_line())
            .message_id(Some(message_id(n, self.from.email.domain())))
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            m = m.to(t.clone());
        }
        let message = m
            .body(n.text())
            .map_err(|e| format!("cannot build the message: {e}"))?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(crate::probe::probes::chain(&e)),
            Err(_) => Err(format!(
                "the SMTP exchange took longer than {} (timeout)",
                crate::config::units::format_duration(self.timeout)
            )),
        }
    }
}

/// Fixed per delivery (a copy sent again after a crash is the same
/// message); unique for each test notification, which is no delivery (all
/// of them had `alert-0.delivery-0`, so a mail system could file a second
/// test as a duplicate of the first).
fn message_id(n: &Notification, domain: &str) -> String {
    if n.is_test() {
        format!(
            "<mamori.test-{}.{:016x}@{domain}>",
            crate::util::now_ms(),
            rand::random::<u64>()
        )
    } else {
        format!(
            "<mamori.alert-{}.delivery-{}@{domain}>",
            n.alert_id, n.delivery_id
        )
    }
}
