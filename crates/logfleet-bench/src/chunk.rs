//! Figure 2: chunk building, `ChunkWriter` (serialize + gzip) against `gzip -6` on the same JSONL.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use logfleet::chunk::{ChunkWriter, EncodedChunk};
use logfleet::config::Settings;
use logfleet::model::LogEntry;

use crate::Sizes;
use crate::common::{entries_of, median, messages, mib, thousands};
use crate::report::{Figure, Goal};

fn encode(entries: &[LogEntry], level: u32, member_bytes: usize) -> anyhow::Result<EncodedChunk> {
    let mut w = ChunkWriter::new(level).with_member_bytes(member_bytes);
    for e in entries {
        w.push(e)?;
    }
    Ok(w.finish()?)
}

/// Runs `gzip -6 -c input > output`; the time includes starting the process.
fn gzip(input: &std::path::Path, output: &std::path::Path) -> anyhow::Result<Duration> {
    let out = std::fs::File::create(output)?;
    let t0 = Instant::now();
    let status = Command::new("gzip")
        .args(["-6", "-c"])
        .arg(input)
        .stdout(out)
        .stderr(Stdio::inherit())
        .status()?;
    let elapsed = t0.elapsed();
    anyhow::ensure!(status.success(), "gzip failed");
    Ok(elapsed)
}

pub fn run(sizes: &Sizes) -> anyhow::Result<Figure> {
    let n = sizes.chunk_logs;
    let settings = Settings::load_from(None)?;
    let level = settings.archive.gzip_level;
    let member_bytes = settings.archive.member_bytes;
    let entries = entries_of(
        &messages(&["bench-chunk-episode".to_owned()], n, 1_000),
        &settings,
    )?;
    let dir = std::env::temp_dir().join(format!("logfleet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (jsonl_path, gz_path) = (dir.join("chunk.jsonl"), dir.join("chunk.jsonl.gz"));
    let (empty_path, empty_gz) = (dir.join("empty"), dir.join("empty.gz"));
    // The exact bytes ChunkWriter compresses, recovered from its own output.
    let first = encode(&entries, level, member_bytes)?;
    let mut jsonl = Vec::new();
    MultiGzDecoder::new(&first.bytes[..]).read_to_end(&mut jsonl)?;
    anyhow::ensure!(jsonl.len() as u64 == first.uncompressed_bytes);
    std::fs::write(&jsonl_path, &jsonl)?;
    std::fs::write(&empty_path, b"")?;
    let (mut writer, mut gz_full, mut gz_empty, mut deflate) = (vec![], vec![], vec![], vec![]);
    let mut writer_size = 0;
    let members = logfleet::chunk::member_index(&first.bytes).map_or(0, |m| m.len());
    for _ in 0..sizes.chunk_reps {
        let t0 = Instant::now();
        let c = encode(&entries, level, member_bytes)?;
        writer.push(t0.elapsed().as_secs_f64());
        writer_size = c.bytes.len();
        gz_full.push(gzip(&jsonl_path, &gz_path)?.as_secs_f64());
        gz_empty.push(gzip(&empty_path, &empty_gz)?.as_secs_f64());
        let t0 = Instant::now();
        let mut enc = GzEncoder::new(Vec::with_capacity(jsonl.len() / 4), Compression::new(level));
        enc.write_all(&jsonl)?;
        let z = enc.finish()?;
        deflate.push(t0.elapsed().as_secs_f64());
        std::hint::black_box(z);
    }
    let gzip_size = std::fs::metadata(&gz_path)?.len() as usize;
    let _ = std::fs::remove_dir_all(&dir);
    let mb = jsonl.len() as f64 / 1e6;
    let (w, g, e, d) = (
        median(&writer),
        median(&gz_full),
        median(&gz_empty),
        median(&deflate),
    );
    let g_net = (g - e).max(1e-9);
    let mut fig = Figure::new("2. Chunk building (JSONL.gz of one chunk)");
    fig.line(format!(
        "chunk: {} logs, {} of JSONL ({:.0} bytes/log), gzip level {level}; medians of {} interleaved runs; MB = 10^6 bytes of uncompressed JSONL",
        thousands(n as u64),
        mib(jsonl.len() as u64),
        jsonl.len() as f64 / n as f64,
        sizes.chunk_reps
    ));
    fig.line(format!(
        "ChunkWriter (LogEntry -> JSON lines -> flate2/zlib-rs gzip, in process): {:.1} MB/s ({:.3} s) -> {} bytes",
        mb / w,
        w,
        thousands(writer_size as u64)
    ));
    fig.line(format!(
        "  as {members} indexed gzip members of about {} of JSONL (archive.member_bytes), compressed on {} threads",
        mib(member_bytes as u64),
        std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4)
    ));
    fig.line(format!(
        "gzip -6 on a file of the same bytes: {:.1} MB/s excluding process start ({:.3} s - {:.3} s for an empty file), {:.1} MB/s including it -> {} bytes",
        mb / g_net,
        g,
        e,
        mb / g,
        thousands(gzip_size as u64)
    ));
    fig.line(format!(
        "for reference, flate2/zlib-rs level {level} on the same JSONL alone, one thread, no serialization: {:.1} MB/s ({:.3} s); ChunkWriter, serializing while its threads compress, runs at {:.2}x that",
        mb / d,
        d,
        d / w
    ));
    fig.line(format!(
        "compressed size ChunkWriter / gzip -6: {:.3}",
        writer_size as f64 / gzip_size as f64
    ));
    fig.verdict(
        "ChunkWriter MB/s / gzip -6 MB/s (excl. start)",
        g_net / w,
        Goal::AtLeast(1.5),
    );
    Ok(fig)
}
