//! A minimal HTTP/1.1 JSON client for the servers' control API (one connection per request).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

pub struct Client {
    host: String,
}

impl Client {
    pub fn new(base: &str) -> Self {
        let host = base.trim_start_matches("http://").trim_end_matches('/').to_string();
        Self { host }
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.request("POST", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value, String> {
        self.request("DELETE", path, None)
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(&self.host).map_err(|e| format!("{method} {path}: connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(120))).ok();
        s.set_nodelay(true).ok();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.host,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| format!("{method} {path}: write: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).map_err(|e| format!("{method} {path}: read: {e}"))?;
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{method} {path}: bad response"))?;
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let json: Value = if body.trim().is_empty() { Value::Null } else { serde_json::from_str(body).map_err(|e| format!("{method} {path}: json: {e}: {body}"))? };
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path}: HTTP {status}: {json}"));
        }
        Ok(json)
    }
}
