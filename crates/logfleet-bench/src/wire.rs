//! A MongoDB wire-protocol proxy that counts what a client sends, command by command.
//!
//! The ingest-worker builds its MongoDB client inside `ingest::run` from `mongo.uri`, so the
//! bench cannot hand it a command event handler. Pointing `mongo.uri` at this proxy sees the
//! same thing from outside the process: every OP_MSG the driver sends. For each one it counts
//! the wire bytes and the size of the command document as the driver's command monitoring
//! reports it (`CommandStartedEvent::command`: the body with each document sequence merged in
//! as an array, e.g. insert's `documents`), so `bson::to_vec(&event.command).len()` summed over
//! the run is what [`Totals::command_bytes`] holds. [`check_against_monitoring`] shows the two
//! agree on a client that has a handler.
//!
//! Handshakes and heartbeats (`hello`, `isMaster`) are counted apart: command monitoring does
//! not report them either.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// OP_MSG, the opcode of every command a 3.x driver sends.
const OP_MSG: i32 = 2013;

/// What was sent for one kind of command (`insert LogEntry`, `findAndModify LogMetadata`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CmdStats {
    /// Commands sent.
    pub count: u64,
    /// Their command documents as command monitoring reports them, in bytes.
    pub command_bytes: u64,
    /// Their whole messages on the wire (header, flags, sections), in bytes.
    pub wire_bytes: u64,
}

impl CmdStats {
    fn add(&mut self, o: &CmdStats) {
        self.count += o.count;
        self.command_bytes += o.command_bytes;
        self.wire_bytes += o.wire_bytes;
    }
}

/// A snapshot of the counts.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// By `"<command> <collection>"` (or the command alone when it names no collection).
    pub by_command: BTreeMap<String, CmdStats>,
    /// Handshakes and heartbeats (`hello`, `isMaster`), not in `by_command`.
    pub handshakes: CmdStats,
    /// Bytes the server sent back, all messages.
    pub reply_bytes: u64,
}

impl Totals {
    /// Every monitored command together.
    pub fn all(&self) -> CmdStats {
        let mut t = CmdStats::default();
        for s in self.by_command.values() {
            t.add(s);
        }
        t
    }
}

/// The proxy: listens on a loopback port and forwards every connection to `upstream`.
pub struct MongoProxy {
    addr: SocketAddr,
    totals: Arc<Mutex<Totals>>,
    task: tokio::task::JoinHandle<()>,
}

impl MongoProxy {
    /// Starts a proxy to the server of `uri` (`mongodb://host:port/...`, one host).
    pub async fn start(uri: &str) -> anyhow::Result<Self> {
        let upstream = host_port(uri)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let totals = Arc::new(Mutex::new(Totals::default()));
        let t = totals.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, t) = (upstream.clone(), t.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        relay(client, server, t).await;
                    }
                });
            }
        });
        Ok(Self { addr, totals, task })
    }

    /// `uri` with its host and port replaced by the proxy's.
    pub fn uri(&self, uri: &str) -> anyhow::Result<String> {
        let hp = host_port(uri)?;
        Ok(uri.replacen(&hp, &self.addr.to_string(), 1))
    }

    pub fn totals(&self) -> Totals {
        self.totals.lock().expect("not poisoned").clone()
    }
}

impl Drop for MongoProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `host:port` of a single-host connection string.
fn host_port(uri: &str) -> anyhow::Result<String> {
    let rest = uri
        .strip_prefix("mongodb://")
        .ok_or_else(|| anyhow::anyhow!("the wire proxy needs a mongodb:// URI, got {uri}"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    anyhow::ensure!(
        !hosts.is_empty() && !hosts.contains(','),
        "the wire proxy needs one host in {uri}"
    );
    Ok(if hosts.contains(':') {
        hosts.to_owned()
    } else {
        format!("{hosts}:27017")
    })
}

/// Copies both ways; parses and counts what the client sends.
async fn relay(client: TcpStream, server: TcpStream, totals: Arc<Mutex<Totals>>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let t = totals.clone();
    let up = async move {
        let mut header = [0u8; 4];
        loop {
            if cr.read_exact(&mut header).await.is_err() {
                break;
            }
            let len = i32::from_le_bytes(header) as usize;
            if len < 16 {
                break;
            }
            let mut msg = vec![0u8; len];
            msg[..4].copy_from_slice(&header);
            if cr.read_exact(&mut msg[4..]).await.is_err() {
                break;
            }
            count_message(&msg, &t);
            if sw.write_all(&msg).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    totals.lock().expect("not poisoned").reply_bytes += n as u64;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Counts one whole client message.
fn count_message(msg: &[u8], totals: &Mutex<Totals>) {
    let opcode = i32::from_le_bytes(msg[12..16].try_into().expect("4 bytes"));
    let (key, command_bytes) = if opcode == OP_MSG {
        parse_op_msg(msg).unwrap_or_else(|| ("(unparsed OP_MSG)".to_owned(), 0))
    } else {
        // OP_QUERY: only a legacy handshake would use it.
        ("isMaster".to_owned(), 0)
    };
    let stats = CmdStats {
        count: 1,
        command_bytes,
        wire_bytes: msg.len() as u64,
    };
    let mut t = totals.lock().expect("not poisoned");
    let name = key.split(' ').next().unwrap_or_default();
    if matches!(name, "hello" | "isMaster" | "ismaster") {
        t.handshakes.add(&stats);
    } else {
        t.by_command.entry(key).or_default().add(&stats);
    }
}

/// The command's key and the size of its command document as command monitoring builds it.
fn parse_op_msg(msg: &[u8]) -> Option<(String, u64)> {
    let flags = u32::from_le_bytes(msg.get(16..20)?.try_into().ok()?);
    let end = msg.len() - if flags & 1 != 0 { 4 } else { 0 };
    let mut at = 20;
    let mut body: Option<&[u8]> = None;
    // Bytes each document sequence adds to the body once merged in as an array field.
    let mut merged = 0u64;
    while at < end {
        let kind = msg[at];
        at += 1;
        let size = i32::from_le_bytes(msg.get(at..at + 4)?.try_into().ok()?) as usize;
        match kind {
            0 => body = Some(msg.get(at..at + size)?),
            1 => {
                let section = msg.get(at + 4..at + size)?;
                let nul = section.iter().position(|&b| b == 0)?;
                // Element: type byte, field name, NUL; then the array document: length, elements,
                // trailing NUL; each element: type byte, index as text, NUL, the document.
                let mut array = 4 + 1;
                let mut docs = &section[nul + 1..];
                let mut i = 0usize;
                while docs.len() >= 4 {
                    let dl = i32::from_le_bytes(docs[..4].try_into().ok()?) as usize;
                    array += 1 + i.to_string().len() + 1 + dl;
                    docs = docs.get(dl..)?;
                    i += 1;
                }
                merged += (1 + nul + 1 + array) as u64;
            }
            _ => return None,
        }
        at += size;
    }
    let body = bson::RawDocument::from_bytes(body?).ok()?;
    let (name, value) = body.into_iter().next()?.ok()?;
    let key = match value.as_str() {
        Some(coll) => format!("{name} {coll}"),
        None => name.to_owned(),
    };
    Some((key, body.as_bytes().len() as u64 + merged))
}

/// One unordered insertMany of `docs`, sent through a proxy by a client that has a command
/// event handler: the insert command bytes the handler saw (`bson::to_vec(&event.command).len()`
/// of every started `insert`) and those the proxy counted. Equal when the proxy counts what
/// command monitoring reports.
pub async fn check_against_monitoring(
    uri: &str,
    database: &str,
    docs: &[bson::RawDocumentBuf],
) -> anyhow::Result<(u64, u64)> {
    use mongodb::event::command::CommandEvent;
    use mongodb::options::ClientOptions;
    let proxy = MongoProxy::start(uri).await?;
    let seen = Arc::new(Mutex::new(0u64));
    let mut opts = ClientOptions::parse(proxy.uri(uri)?).await?;
    let s = seen.clone();
    opts.command_event_handler = Some(mongodb::event::EventHandler::callback(
        move |ev: CommandEvent| {
            if let CommandEvent::Started(e) = ev
                && e.command_name == "insert"
            {
                let n = bson::to_vec(&e.command).map_or(0, |v| v.len() as u64);
                *s.lock().expect("not poisoned") += n;
            }
        },
    ));
    let client = mongodb::Client::with_options(opts)?;
    let db = client.database(database);
    db.collection::<bson::RawDocumentBuf>("wire_check")
        .insert_many(docs)
        .ordered(false)
        .await?;
    db.drop().await?;
    let by_handler = *seen.lock().expect("not poisoned");
    let by_proxy = proxy
        .totals()
        .by_command
        .get("insert wire_check")
        .map_or(0, |s| s.command_bytes);
    Ok((by_handler, by_proxy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_uris() {
        assert_eq!(
            host_port("mongodb://127.0.0.1:27018/?directConnection=true").unwrap(),
            "127.0.0.1:27018"
        );
        assert_eq!(host_port("mongodb://u:p@db/x").unwrap(), "db:27017");
        assert!(host_port("mongodb://a:1,b:2/").is_err());
    }

    #[test]
    fn command_bytes_merge_document_sequences() {
        // An OP_MSG with a body and a `documents` sequence of two documents.
        let body = bson::to_vec(&bson::doc! {"insert": "c", "$db": "d"}).unwrap();
        let d1 = bson::to_vec(&bson::doc! {"a": 1}).unwrap();
        let d2 = bson::to_vec(&bson::doc! {"b": "x"}).unwrap();
        let mut seq = Vec::new();
        seq.extend(b"documents\0");
        seq.extend(&d1);
        seq.extend(&d2);
        let mut msg = vec![0u8; 16];
        msg[12..16].copy_from_slice(&OP_MSG.to_le_bytes());
        msg.extend(0u32.to_le_bytes());
        msg.push(0);
        msg.extend(&body);
        msg.push(1);
        msg.extend(((seq.len() + 4) as i32).to_le_bytes());
        msg.extend(&seq);
        let len = msg.len() as i32;
        msg[..4].copy_from_slice(&len.to_le_bytes());
        let (key, n) = parse_op_msg(&msg).unwrap();
        let merged = bson::to_vec(&bson::doc! {
            "insert": "c", "$db": "d",
            "documents": [bson::doc! {"a": 1}, bson::doc! {"b": "x"}],
        })
        .unwrap();
        assert_eq!(key, "insert c");
        assert_eq!(n, merged.len() as u64);
    }
}
