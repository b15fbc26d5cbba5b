//! Signed one-click acknowledge links: `{public_url}/ack/{id}/{token}` where
//! `token` is HMAC-SHA256 over `ack:{id}` with a secret kept in
//! `<data_dir>/alert.key` (0600, created on first start). A link works for
//! its own alert only and needs no API token, so it works from a phone.
//!
//! A GET only shows a page with one "Acknowledge" button; the button POSTs.
//! Mail scanners and link previews follow GETs, so a GET must not mutate.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub struct AckKey {
    secret: Vec<u8>,
}

impl AckKey {
    pub fn new(secret: Vec<u8>) -> AckKey {
        AckKey { secret }
    }

    /// Reads the key, or creates one (0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> std::io::Result<AckKey> {
        match std::fs::read_to_string(path) {
            Ok(t) if t.trim().len() >= 32 => {
                return Ok(AckKey::new(t.trim().as_bytes().to_vec()));
            }
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("alert key file {} is too short", path.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(key.as_bytes())?;
        f.write_all(b"\n")?;
        Ok(AckKey::new(key.into_bytes()))
    }

    fn mac(&self, alert_id: i64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(format!("ack:{alert_id}").as_bytes());
        mac
    }

    /// The token for one alert, in hex.
    pub fn sign(&self, alert_id: i64) -> String {
        self.mac(alert_id)
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `token` is this alert's (compared in constant time).
    pub fn verify(&self, alert_id: i64, token: &str) -> bool {
        let Some(bytes) = from_hex(token) else {
            return false;
        };
        self.mac(alert_id).verify_slice(&bytes).is_ok()
    }

    pub fn url(&self, public_url: &str, alert_id: i64) -> String {
        format!(
            "{}/ack/{alert_id}/{}",
            public_url.trim_end_matches('/'),
            self.sign(alert_id)
        )
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page a link opens: the alert and one big button that POSTs.
pub fn page(title: &str, state: &str, message: Option<&str>, show_button: bool) -> String {
    let button = if show_button {
        r#"<form method="post"><button type="submit">Acknowledge</button></form>"#
    } else {
        ""
    };
    let message = message
        .map(|m| format!("<p class=\"msg\">{}</p>", escape(m)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>mamori: {title}</title>
<style>body{{font-family:sans-serif;margin:2em auto;max-width:32em;padding:0 1em}}
button{{font-size:1.5em;width:100%;padding:1em;border:0;border-radius:.5em;background:#c62828;color:#fff}}
.msg{{font-size:1.2em}}</style></head>
<body><h1>{title}</h1><p>State: <b>{state}</b></p>{message}{button}</body></html>
"#,
        title = escape(title),
        state = escape(state),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_valid_for_its_alert_only() {
        let k = AckKey::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let t = k.sign(7);
        assert_eq!(t.len(), 64);
        assert!(k.verify(7, &t));
        assert!(!k.verify(8, &t), "another alert");
        let mut tampered = t.clone();
        tampered.replace_range(0..1, if t.starts_with('0') { "1" } else { "0" });
        assert!(!k.verify(7, &tampered));
        assert!(!k.verify(7, "zz"));
        assert!(!k.verify(7, ""));
        let other = AckKey::new(b"another secret, another agent...".to_vec());
        assert!(!other.verify(7, &t));
        assert_eq!(k.url("http://x:1/", 7), format!("http://x:1/ack/7/{t}"));
    }

    #[test]
    fn the_key_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("alert.key");
        let a = AckKey::load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = AckKey::load_or_create(&p).unwrap();
        assert_eq!(a.sign(1), b.sign(1));
    }

    #[test]
    fn the_page_escapes_the_title() {
        let p = page("<script>", "firing", None, true);
        assert!(p.contains("&lt;script&gt;"));
        assert!(p.contains(r#"<form method="post">"#));
    }
}
