//! Email through an SMTP relay: a small SMTP server on a real socket (the RFC 5321 commands
//! lettre's client sends) receives every email, and the maildir keeps the copy.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use shop::deployment::{Shop, ShopConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The messages a relay accepted (the DATA of each, lines joined by CRLF).
type Received = Arc<Mutex<Vec<String>>>;

/// An SMTP relay on 127.0.0.1 that accepts everything: its `smtp://` URL and what it got.
async fn relay() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("smtp://{}", listener.local_addr().expect("addr"));
    let received = Received::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(session(socket, store.clone()));
        }
    });
    (url, received)
}

async fn session(socket: tokio::net::TcpStream, received: Received) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 relay.test ESMTP\r\n").await?;
    while let Some(line) = lines.next_line().await? {
        let command = line.to_ascii_uppercase();
        let answer: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
            b"250-relay.test\r\n250 8BITMIME\r\n"
        } else if ["MAIL FROM", "RCPT TO", "RSET", "NOOP"].iter().any(|c| command.starts_with(c)) {
            b"250 OK\r\n"
        } else if command == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = Vec::new();
            while let Some(line) = lines.next_line().await? {
                if line == "." {
                    break;
                }
                data.push(line);
            }
            received.lock().push(data.join("\r\n"));
            b"250 queued\r\n"
        } else if command == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"500 unknown command\r\n"
        };
        write.write_all(answer).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_relay_configured_every_email_goes_through_smtp_and_the_maildir_keeps_the_copy() {
    let (url, received) = relay().await;
    let (dbs, _dir) = crate::checkout::sqlite_databases().await;
    let (bus, _broker) = {
        let dir = tempfile::tempdir().expect("tempdir");
        let bus =
            switchboard::Bus::connect(&format!("embedded:{}", dir.path().display())).await.expect("bus");
        (bus, dir)
    };
    let maildir = tempfile::tempdir().expect("maildir");
    let mut config = ShopConfig::ephemeral(maildir.path().to_owned());
    config.smtp = Some(url);
    let shop = Shop::start(dbs, bus, config).await.expect("shop");
    let http = reqwest::Client::new();
    let body = json!({"customer": "ada@example.com", "lines": [{"sku": "tea-sencha", "quantity": 1}]});
    let order: serde_json::Value = http
        .post(format!("{}/orders", shop.storefront))
        .json(&body)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = order["id"].as_str().expect("id").to_owned();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.lock().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the relay got nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let relayed = received.lock().clone();
    assert_eq!(relayed.len(), 1, "one email through the relay: {relayed:?}");
    let email = &relayed[0];
    assert!(email.contains("To: ada@example.com"), "{email}");
    assert!(email.contains(&format!("Subject: Your order {id} is confirmed")), "{email}");
    let copies = shop::email::sent(maildir.path()).expect("maildir");
    assert_eq!(copies.len(), 1, "and one copy in the maildir");
    let message_id = email.lines().find(|l| l.starts_with("Message-ID: ")).expect("a Message-ID");
    assert!(copies[0].1.contains(message_id), "the copy is the relayed message");
    shop.shutdown().await;
}

#[test]
fn a_bad_smtp_url_is_refused_with_what_is_wrong() {
    use shop::email::Mailer;
    for (url, says) in
        [("mail://x", "use smtp://"), ("smtp://:25", "no host"), ("smtp://relay:notaport", "bad port")]
    {
        let error = Mailer::maildir("m").with_smtp(url).err().unwrap_or_else(|| panic!("{url} accepted"));
        assert!(error.to_string().contains(says), "{url}: {error}");
    }
    assert!(Mailer::maildir("m").with_smtp("smtp://127.0.0.1:2525").is_ok());
}
