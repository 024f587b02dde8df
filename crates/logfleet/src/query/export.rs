//! Export: a whole selection as JSON Lines (plain or gzip), streamed in bounded memory.

use tokio::sync::mpsc;

use super::{EXPORT_PAGE, ExportFormat, ExportPiece, LogQuery, Order, QueryError, QueryService};
use crate::chunk::ChunkError;
use crate::object_store::ObjectStore;

impl<S: ObjectStore> QueryService<S> {
    /// Streams every log matching the query (from its cursor on, in its order) as JSON Lines,
    /// `EXPORT_PAGE` logs at a time, to `tx`. Memory stays bounded by one page plus the chunk
    /// cache, whatever the episode's size. An ascending export stops at the logs numbered when
    /// it started. Returns the number of logs sent; stops early, without error, when the
    /// receiver goes away. An error is also sent down `tx` (as an I/O error, so a byte stream
    /// built on `tx` fails rather than ending as if complete).
    pub async fn export(
        &self,
        q: &LogQuery,
        format: ExportFormat,
        tx: &mpsc::Sender<Result<ExportPiece, std::io::Error>>,
    ) -> Result<u64, QueryError> {
        match self.export_inner(q, format, tx).await {
            Ok(n) => Ok(n),
            Err(e) => {
                tracing::warn!(episode = %q.episode, error = %e, "export failed");
                let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
                Err(e)
            }
        }
    }

    async fn export_inner(
        &self,
        q: &LogQuery,
        format: ExportFormat,
        tx: &mpsc::Sender<Result<ExportPiece, std::io::Error>>,
    ) -> Result<u64, QueryError> {
        use std::io::Write;
        let mut q = q.clone();
        q.limit = EXPORT_PAGE;
        if q.order == Order::Asc {
            let meta = self.meta(&q.episode).await?;
            let end = q
                .filter
                .seq
                .end
                .unwrap_or(i64::MAX)
                .min(meta.next_sequence_number);
            q.filter.seq.end = Some(end);
        }
        let mut gz = (format == ExportFormat::JsonlGz).then(|| {
            flate2::write::GzEncoder::new(Vec::with_capacity(1 << 20), flate2::Compression::new(6))
        });
        let mut total = 0u64;
        let mut buf = Vec::with_capacity(1 << 20);
        loop {
            let page = self.read_page(&q).await?;
            buf.clear();
            for r in &page.logs {
                serde_json::to_writer(&mut buf, r)
                    .map_err(std::io::Error::other)
                    .map_err(ChunkError::Io)?;
                buf.push(b'\n');
            }
            let n = page.logs.len() as u64;
            total += n;
            let bytes = match gz.as_mut() {
                Some(enc) => {
                    enc.write_all(&buf).map_err(ChunkError::Io)?;
                    std::mem::take(enc.get_mut())
                }
                None => std::mem::take(&mut buf),
            };
            if (!bytes.is_empty() || n > 0)
                && tx.send(Ok(ExportPiece { bytes, logs: n })).await.is_err()
            {
                return Ok(total);
            }
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        if let Some(enc) = gz {
            let bytes = enc.finish().map_err(ChunkError::Io)?;
            let _ = tx.send(Ok(ExportPiece { bytes, logs: 0 })).await;
        }
        Ok(total)
    }
}
