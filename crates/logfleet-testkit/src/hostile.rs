//! A corpus of malformed and adversarial producer messages, each with the words its
//! dead-letter reason must contain. Used at the decoder level and through a real ingest-worker.

use lapin::BasicProperties;
use serde_json::json;

/// One hostile message.
pub struct HostileCase {
    /// What the case is, unique within the corpus (also its AMQP message_id, when it has one).
    pub name: &'static str,
    pub body: Vec<u8>,
    /// `message_id`, `content_type` and `content_encoding` as published.
    pub message_id: Option<String>,
    pub content_type: Option<&'static str>,
    pub content_encoding: Option<&'static str>,
    /// Words the dead-letter reason must contain.
    pub reason_contains: &'static str,
}

impl HostileCase {
    pub fn properties(&self) -> BasicProperties {
        let mut p = BasicProperties::default();
        if let Some(id) = &self.message_id {
            p = p.with_message_id(id.as_str().into());
        }
        if let Some(ct) = self.content_type {
            p = p.with_content_type(ct.into());
        }
        if let Some(ce) = self.content_encoding {
            p = p.with_content_encoding(ce.into());
        }
        p
    }
}

fn case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    reason_contains: &'static str,
) -> HostileCase {
    HostileCase {
        name,
        body: body.into(),
        message_id: Some(name.to_owned()),
        content_type: Some("application/json"),
        content_encoding: None,
        reason_contains,
    }
}

fn log_with(field: &str, value: serde_json::Value) -> Vec<u8> {
    let mut v = json!({"episodeId": "hostile", "timestamp": 1_764_000_000_000_i64, "level": "info", "message": "m"});
    v[field] = value;
    serde_json::to_vec(&v).unwrap()
}

fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(json!(1), |inner, _| json!({ "n": inner }))
}

/// A gzip "bomb": `size` bytes of zeros compressed to a few KiB.
fn gzip_bomb(size: usize) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![b'0'; size]).unwrap();
    e.finish().unwrap()
}

/// The corpus: more than 30 kinds of bad input.
pub fn corpus() -> Vec<HostileCase> {
    let good_log = json!({"timestamp": 1, "level": "info", "message": "m"});
    let mut v = vec![
        case("truncated-json", r#"{"episodeId":"hostile","timestamp":1,"lev"#, "invalid JSON"),
        case("empty-body", "", "invalid JSON"),
        case("not-json", "hello world", "invalid JSON"),
        case("json-array", "[1,2,3]", "invalid JSON"),
        case("json-null", "null", "invalid JSON"),
        case("json-string", r#""just a string""#, "invalid JSON"),
        case("invalid-utf8", b"{\"episodeId\":\"hostile\",\"message\":\"\xc3\x28\"}".to_vec(), "UTF-8"),
        case("nul-byte-outside-string", b"{\"episodeId\":\"hostile\"\x00}".to_vec(), "invalid JSON"),
        case("nul-in-message", log_with("message", json!("a\u{0}b")), "NUL"),
        case("message-wrong-type", log_with("message", json!(42)), "expected a string"),
        case("level-wrong-type", log_with("level", json!(3)), "expected a string"),
        case("timestamp-boolean", log_with("timestamp", json!(true)), "timestamp must be"),
        case("timestamp-float", log_with("timestamp", json!(1.5)), "integer"),
        case("timestamp-huge-number", r#"{"episodeId":"hostile","timestamp":99999999999999999999999,"level":"info","message":"m"}"#, "integer"),
        case("number-out-of-range", r#"{"episodeId":"hostile","timestamp":1,"level":"info","message":"m","metadata":{"x":1e400}}"#, "invalid JSON"),
        case("metadata-u64-overflow", r#"{"episodeId":"hostile","timestamp":1,"level":"info","message":"m","metadata":{"x":18446744073709551615}}"#, "64-bit"),
        case("timestamp-far-past", log_with("timestamp", json!("1900-01-01T00:00:00Z")), "outside"),
        case("timestamp-negative", log_with("timestamp", json!(-1)), "outside"),
        case("timestamp-far-future", log_with("timestamp", json!("3000-01-01T00:00:00Z")), "outside"),
        case("timestamp-not-rfc3339", log_with("timestamp", json!("yesterday")), "RFC 3339"),
        case("unknown-level", log_with("level", json!("verbose")), "unknown level"),
        case("empty-level", log_with("level", json!("")), "unknown level"),
        case("episode-slash", log_with("episodeId", json!("a/b")), "episodeId"),
        case("episode-dot-dot", log_with("episodeId", json!("a..b")), "episodeId"),
        case("episode-traversal", log_with("episodeId", json!("../../etc/passwd")), "episodeId"),
        case("episode-dollar", log_with("episodeId", json!("$gt")), "episodeId"),
        case("episode-operator-object", log_with("episodeId", json!({"$gt": ""})), "invalid JSON"),
        case("episode-cyrillic-homoglyph", log_with("episodeId", json!("ерisode")), "episodeId"),
        case("episode-rtl-override", log_with("episodeId", json!("ab\u{202e}cd")), "episodeId"),
        case("episode-zero-width", log_with("episodeId", json!("ab\u{200b}cd")), "episodeId"),
        case("episode-fullwidth", log_with("episodeId", json!("ａｂ")), "episodeId"),
        case("episode-empty", log_with("episodeId", json!("")), "episodeId is empty"),
        case("episode-too-long", log_with("episodeId", json!("e".repeat(129))), "the limit is 128"),
        case("episode-missing", r#"{"timestamp":1,"level":"info","message":"m"}"#, "missing field `episodeId`"),
        case("metadata-deep", log_with("metadata", nested(100)), "deeper"),
        case("metadata-operator-key", log_with("metadata", json!({"$where": "sleep(1000)"})), "'$'"),
        case("metadata-nul-key", log_with("metadata", json!({"a\u{0}b": 1})), "NUL"),
        case("metadata-not-object", log_with("metadata", json!([1, 2])), "invalid JSON"),
        case("metadata-too-large", log_with("metadata", json!({"blob": "x".repeat(20_000)})), "metadata is"),
        case("message-too-long", log_with("message", json!("m".repeat(70_000))), "the limit is 65536"),
        case("oversize-body", serde_json::to_vec(&json!({"episodeId": "hostile", "logs": vec![json!({"timestamp": 1, "level": "info", "message": "x".repeat(60_000)}); 80]})).unwrap(), "bytes; the limit is 4194304"),
        case("too-many-logs", serde_json::to_vec(&json!({"episodeId": "hostile", "logs": vec![good_log.clone(); 10_001]})).unwrap(), "10001 logs; the limit is 10000"),
        case("empty-batch", r#"{"episodeId":"hostile","logs":[]}"#, "no logs"),
        case("logs-not-array", r#"{"episodeId":"hostile","logs":{"a":1}}"#, "invalid JSON"),
        case("mixed-forms", r#"{"episodeId":"hostile","logs":[],"message":"m"}"#, "mixes"),
        case("duplicate-keys", r#"{"episodeId":"hostile","timestamp":1,"level":"info","message":"a","message":"b"}"#, "duplicate field"),
        case("unknown-field", log_with("severity", json!("high")), "unknown field"),
        case("bad-log-in-batch", serde_json::to_vec(&json!({"episodeId": "hostile", "logs": [good_log, {"timestamp": 1, "level": "nope", "message": "m"}]})).unwrap(), "log 1: unknown level"),
    ];
    let mut wrong_ct = case(
        "wrong-content-type",
        log_with("message", json!("m")),
        "content_type",
    );
    wrong_ct.content_type = Some("text/plain");
    v.push(wrong_ct);
    let mut xml = case("xml-content-type", "<log/>", "content_type");
    xml.content_type = Some("application/xml");
    v.push(xml);
    let mut bomb = case("gzip-bomb", gzip_bomb(16 << 20), "content_encoding");
    bomb.content_encoding = Some("gzip");
    v.push(bomb);
    v.push(case("gzip-without-encoding", gzip_bomb(1 << 20), "UTF-8"));
    let mut bad_id = case(
        "message-id-control-char",
        log_with("message", json!("bad id")),
        "message_id",
    );
    bad_id.message_id = Some("id\nwith-newline".into());
    v.push(bad_id);
    v
}
