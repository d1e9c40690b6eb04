//! The email service: competing instances on the `emails` queue, each writing a real RFC
//! 5322 message (built with `lettre`) as a `.eml` file in a maildir-like folder, and, when
//! an SMTP relay is configured (`smtp://host:port`), handing it to the relay first.
//!
//! With SMTP, delivery is at least once: a relay that accepted a message whose instance died
//! before recording it gets it again on redelivery, with the same `Message-ID`, by which
//! mail systems drop the repeat. The `.eml` copy is the shop's record of what was sent.
//!
//! Sending once: the file is named after the message id and written atomically (a
//! temporary file renamed into `new/`), so a redelivery rewrites the same file rather than
//! adding a second one; the inbox layer skips ids already handled, so the usual redelivery
//! does not even get that far.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchboard::layers::InboxStore;
use switchboard::{Bus, Handled, HandlerError, Incoming, Middleware, Router, RunningRouter};
use switchboard::{SubscriptionName, SubscriptionSpec, TopicName};
use tower::Layer;

/// The queue of emails to send.
pub const EMAILS_TOPIC: &str = "emails";

/// The log of emails written (`email.sent`), for whoever shows what a customer was told.
pub const SENT_TOPIC: &str = "emails.sent";

/// The sender of every email.
pub const FROM: &str = "Switchboard Tea <orders@shop.switchboard.dev>";

/// An email to send: the body of a message on the `emails` queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    /// The order it is about.
    pub order: String,
    /// `confirmed` or `canceled`.
    pub kind: String,
}

/// Where an instance delivers: a copy in the maildir always, and an SMTP relay when one is
/// configured.
#[derive(Clone)]
pub struct Mailer {
    maildir: PathBuf,
    smtp: Option<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>,
}

impl Mailer {
    /// Writes `.eml` files under `maildir` (`tmp/`, then `new/`).
    pub fn maildir(maildir: impl Into<PathBuf>) -> Mailer {
        Mailer { maildir: maildir.into(), smtp: None }
    }

    /// Also hands every email to the SMTP relay at `url` (`smtp://host:port`, port 25 when
    /// left out). Plain SMTP, no TLS or authentication: the local relay or sidecar an MTA
    /// listens on, which does the rest.
    ///
    /// # Errors
    /// The URL is not `smtp://host[:port]`.
    pub fn with_smtp(mut self, url: &str) -> anyhow::Result<Mailer> {
        let rest = url
            .strip_prefix("smtp://")
            .ok_or_else(|| anyhow::anyhow!("SMTP URL {url:?}: use smtp://host[:port]"))?
            .trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                (host, port.parse::<u16>().map_err(|_| anyhow::anyhow!("SMTP URL {url:?}: bad port"))?)
            }
            None => (rest, 25),
        };
        if host.is_empty() {
            anyhow::bail!("SMTP URL {url:?}: no host");
        }
        let transport = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(std::time::Duration::from_secs(10)))
            .build();
        self.smtp = Some(transport);
        Ok(self)
    }

    /// The maildir the copies go to.
    pub fn dir(&self) -> &Path {
        &self.maildir
    }
}

/// One email instance.
pub struct EmailService {
    router: RunningRouter,
}

impl EmailService {
    /// Starts an instance delivering through `mailer`, skipping message ids `inbox` has
    /// seen. Instances started with the same `bus` compete for the queue.
    ///
    /// # Errors
    /// The folders cannot be created, or the bus refuses the subscription.
    pub async fn start(bus: Bus, mailer: Mailer, inbox: Arc<dyn InboxStore>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(mailer.maildir.join("tmp"))?;
        std::fs::create_dir_all(mailer.maildir.join("new"))?;
        let topic = TopicName::new(EMAILS_TOPIC)?;
        bus.create_topic(&topic, 1).await?;
        bus.create_topic(&TopicName::new(SENT_TOPIC)?, 1).await?;
        let mailer = Arc::new(mailer);
        let handler = tower::service_fn(move |incoming: Incoming| send(mailer.clone(), incoming));
        let spec = SubscriptionSpec::queue(SubscriptionName::from_static("email"));
        let middleware = Middleware::default().with_inbox(Some(inbox));
        let router = Router::new(bus).route("email", topic, spec, middleware.layer(handler)).start().await?;
        Ok(EmailService { router })
    }

    /// Finishes the emails in flight and stops.
    pub async fn shutdown(self) {
        let _ = self.router.shutdown().await;
    }
}

async fn send(mailer: Arc<Mailer>, incoming: Incoming) -> Handled {
    let email: Email = serde_json::from_slice(&incoming.message.data).map_err(HandlerError::permanent)?;
    let file_name = safe_name(&incoming.message.id);
    let message = lettre::Message::builder()
        .from(FROM.parse().map_err(HandlerError::permanent)?)
        .to(email.to.parse().map_err(HandlerError::permanent)?)
        .subject(email.subject.as_str())
        .message_id(Some(format!("<{file_name}@shop.switchboard.dev>")))
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(email.body.clone())
        .map_err(HandlerError::permanent)?;
    let bytes = message.formatted();
    if let Some(smtp) = &mailer.smtp {
        // The relay first: a copy written for an email the relay refused would say it went.
        lettre::AsyncTransport::send(smtp, message).await.map_err(|e| {
            if e.is_permanent() { HandlerError::permanent(e) } else { HandlerError::transient(e) }
        })?;
    }
    let dir = mailer.maildir.clone();
    let name = file_name.clone();
    tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
        .await
        .map_err(HandlerError::transient)?
        .map_err(HandlerError::transient)?;
    let sent = serde_json::json!({
        "order": email.order,
        "kind": email.kind,
        "to": email.to,
        "subject": email.subject,
        "message_id": file_name,
        "at": crate::now_ms(),
    });
    let fact =
        crate::order_fact("/shop/email", "email.sent", format!("sent-{file_name}"), &email.order, &sent);
    Ok(vec![switchboard::Outgoing::new(TopicName::from_static(SENT_TOPIC), fact)])
}

/// A message id as a file name: the characters a maildir name allows.
fn safe_name(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect()
}

fn write_atomically(maildir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = maildir.join("tmp").join(format!("{name}.eml"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, maildir.join("new").join(format!("{name}.eml")))?;
    std::fs::File::open(maildir.join("new"))?.sync_all()
}

/// The emails written so far in `maildir` (file name and contents), oldest name first.
///
/// # Errors
/// The folder cannot be read.
pub fn sent(maildir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut emails = Vec::new();
    let entries = match std::fs::read_dir(maildir.join("new")) {
        Ok(entries) => entries,
        // No instance has started yet: nothing was sent.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(emails),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        emails
            .push((entry.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(entry.path())?));
    }
    emails.sort();
    Ok(emails)
}
