//! Query-string parsing: every parameter is checked against the route's list and parsed into
//! the library's validated types; anything wrong is a `QueryError::BadRequest` naming it.

use std::collections::BTreeMap;

use logfleet::domain::EpisodeId;
use logfleet::query::{
    LogFilter, LogQuery, Order, QueryError, parse_levels, parse_seq_range, parse_time_range,
};

/// The parameters of one request, by name.
pub struct Params(BTreeMap<String, Vec<String>>);

fn bad(m: String) -> QueryError {
    QueryError::BadRequest(m)
}

impl Params {
    /// Groups `raw` by name, refusing names outside `allowed`.
    pub fn new(raw: Vec<(String, String)>, allowed: &[&str]) -> Result<Self, QueryError> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in raw {
            if !allowed.contains(&k.as_str()) {
                let shown: String = k.chars().take(40).collect();
                return Err(bad(format!(
                    "unknown parameter {shown:?}; expected one of: {}",
                    allowed.join(", ")
                )));
            }
            map.entry(k).or_default().push(v);
        }
        Ok(Self(map))
    }

    /// The single value of `name` (`level` may repeat; nothing else may).
    pub fn one(&self, name: &str) -> Result<Option<&str>, QueryError> {
        match self.0.get(name).map(Vec::as_slice) {
            None => Ok(None),
            Some([v]) => Ok(Some(v.as_str())),
            Some(_) => Err(bad(format!("parameter {name} is given more than once"))),
        }
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, QueryError> {
        self.one(name)?
            .map(|v| match v.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(n),
                _ => Err(bad(format!(
                    "{name} must be an integer, 0 or more, not {v:?}"
                ))),
            })
            .transpose()
    }

    pub fn usize(&self, name: &str) -> Result<Option<usize>, QueryError> {
        self.one(name)?
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad(format!("{name} must be an integer, 0 or more, not {v:?}")))
            })
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, QueryError> {
        self.one(name)?
            .map(|v| match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad(format!("{name} must be true or false, not {v:?}"))),
            })
            .transpose()
    }

    /// The log query these parameters describe.
    pub fn log_query(&self, episode: EpisodeId, limit: usize) -> Result<LogQuery, QueryError> {
        let mut levels = Vec::new();
        for v in self.0.get("level").into_iter().flatten() {
            for l in parse_levels(v)? {
                if !levels.contains(&l) {
                    levels.push(l);
                }
            }
        }
        let contains = self.one("contains")?.map(str::to_owned);
        if contains.as_deref() == Some("") {
            return Err(bad("contains must not be empty".into()));
        }
        Ok(LogQuery {
            episode,
            filter: LogFilter {
                seq: self
                    .one("seq")?
                    .map(parse_seq_range)
                    .transpose()?
                    .unwrap_or_default(),
                time: self
                    .one("time")?
                    .map(parse_time_range)
                    .transpose()?
                    .unwrap_or_default(),
                levels,
                contains,
            },
            order: self
                .one("order")?
                .map(Order::parse)
                .transpose()?
                .unwrap_or_default(),
            cursor: self.i64("cursor")?,
            limit,
        })
    }
}
