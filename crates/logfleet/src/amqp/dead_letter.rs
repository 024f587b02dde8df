//! Dead letters: the headers a worker adds when it dead-letters a message, and the properties a
//! replay (`logctl dlq replay`) republishes it with.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use logfleet_contract::headers::{
    FAILED_AT_HEADER, HISTORY_HEADER, MAX_HISTORY, REASON_HEADER, REPLAY_RUN_HEADER,
    REPLAYS_HEADER, ROUTING_KEY_HEADER, SOURCE_QUEUE_HEADER,
};

/// Copies a delivery's properties and adds the dead-letter headers, for a republish to a DLX.
pub fn dead_letter_properties(
    original: &BasicProperties,
    reason: &str,
    source_queue: &str,
    routing_key: &str,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    let reason: String = reason.chars().take(1024).collect();
    headers.insert(
        REASON_HEADER.into(),
        AMQPValue::LongString(LongString::from(reason)),
    );
    headers.insert(
        FAILED_AT_HEADER.into(),
        AMQPValue::LongString(
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        ),
    );
    headers.insert(
        SOURCE_QUEUE_HEADER.into(),
        AMQPValue::LongString(source_queue.into()),
    );
    headers.insert(
        ROUTING_KEY_HEADER.into(),
        AMQPValue::LongString(routing_key.into()),
    );
    original.clone().with_headers(headers)
}

/// A header's value as text, if it is a string.
pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    let h = props.headers().as_ref()?;
    match h.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A header's value as an integer, if it is one of AMQP's integer types.
pub fn header_i64(props: &BasicProperties, name: &str) -> Option<i64> {
    let h = props.headers().as_ref()?;
    match h.inner().get(&ShortString::from(name))? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

/// The properties a dead letter is replayed with: everything of the original (message id
/// included, so ingest stays exactly-once), minus the dead-letter headers of its last failure,
/// which move into [`HISTORY_HEADER`]; [`REPLAYS_HEADER`] is incremented and
/// [`REPLAY_RUN_HEADER`] set to `run`. A message that fails again is dead-lettered with these
/// headers copied, so it returns to the DLQ with its history.
pub fn replay_properties(original: &BasicProperties, run: &str) -> BasicProperties {
    let mut map = original
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    let text = |v: Option<AMQPValue>| match v {
        Some(AMQPValue::LongString(s)) => AMQPValue::LongString(s),
        Some(AMQPValue::ShortString(s)) => AMQPValue::LongString(s.as_str().into()),
        _ => AMQPValue::LongString("".into()),
    };
    let mut entry = FieldTable::default();
    entry.insert(
        "reason".into(),
        text(map.remove(&ShortString::from(REASON_HEADER))),
    );
    entry.insert(
        "failed-at".into(),
        text(map.remove(&ShortString::from(FAILED_AT_HEADER))),
    );
    entry.insert(
        "source-queue".into(),
        text(map.remove(&ShortString::from(SOURCE_QUEUE_HEADER))),
    );
    entry.insert(
        "replayed-at".into(),
        AMQPValue::LongString(
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        ),
    );
    map.remove(&ShortString::from(ROUTING_KEY_HEADER));
    let mut history: Vec<AMQPValue> = match map.remove(&ShortString::from(HISTORY_HEADER)) {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    history.push(AMQPValue::FieldTable(entry));
    if history.len() > MAX_HISTORY {
        history.drain(..history.len() - MAX_HISTORY);
    }
    let replays = header_i64(original, REPLAYS_HEADER).unwrap_or(0) + 1;
    map.insert(HISTORY_HEADER.into(), AMQPValue::FieldArray(history.into()));
    map.insert(REPLAYS_HEADER.into(), AMQPValue::LongLongInt(replays));
    map.insert(REPLAY_RUN_HEADER.into(), AMQPValue::LongString(run.into()));
    original.clone().with_headers(FieldTable::from(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_headers_keep_the_original_ones() {
        let mut h = FieldTable::default();
        h.insert("trace".into(), AMQPValue::LongString("t-1".into()));
        let p = BasicProperties::default()
            .with_message_id("m1".into())
            .with_headers(h);
        let d = dead_letter_properties(&p, "invalid JSON", "q.p0", "ep-1");
        assert_eq!(
            header_str(&d, REASON_HEADER).as_deref(),
            Some("invalid JSON")
        );
        assert_eq!(header_str(&d, "trace").as_deref(), Some("t-1"));
        assert_eq!(header_str(&d, ROUTING_KEY_HEADER).as_deref(), Some("ep-1"));
        assert_eq!(d.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
    }

    #[test]
    fn replay_moves_the_failure_into_the_history_and_counts() {
        let p = BasicProperties::default().with_message_id("m1".into());
        let dead = dead_letter_properties(&p, "too many logs", "q.p0", "ep-1");
        let once = replay_properties(&dead, "run-1");
        assert_eq!(header_str(&once, REASON_HEADER), None);
        assert_eq!(header_str(&once, ROUTING_KEY_HEADER), None);
        assert_eq!(header_i64(&once, REPLAYS_HEADER), Some(1));
        assert_eq!(
            header_str(&once, REPLAY_RUN_HEADER).as_deref(),
            Some("run-1")
        );
        assert_eq!(once.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
        let again = dead_letter_properties(&once, "still too many", "q.p1", "ep-1");
        let twice = replay_properties(&again, "run-2");
        assert_eq!(header_i64(&twice, REPLAYS_HEADER), Some(2));
        let h = twice.headers().as_ref().unwrap();
        let Some(AMQPValue::FieldArray(history)) =
            h.inner().get(&ShortString::from(HISTORY_HEADER))
        else {
            panic!("no history array");
        };
        let reasons: Vec<String> = history
            .as_slice()
            .iter()
            .map(|e| match e {
                AMQPValue::FieldTable(t) => match t.inner().get(&ShortString::from("reason")) {
                    Some(AMQPValue::LongString(s)) => s.to_string(),
                    other => panic!("reason is {other:?}"),
                },
                other => panic!("history entry is {other:?}"),
            })
            .collect();
        assert_eq!(reasons, ["too many logs", "still too many"]);
    }
}
