//! Object storage for chunks: the small [`ObjectStore`] trait, its S3 implementation
//! ([`S3ObjectStore`]) and an in-memory one ([`MemoryObjectStore`]) for tests that need no
//! services. Both pass the same contract suite (`contract::check`, behind the `testing`
//! feature): the unit tests run it on memory, the integration tests on a real S3 server.

mod memory;
mod s3;

#[cfg(any(test, feature = "testing"))]
pub mod contract;

use std::future::Future;

pub use memory::MemoryObjectStore;
pub use s3::S3ObjectStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("S3 {op} {key}: {message}")]
    Request {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("upload of {key} did not verify: {detail}")]
    Verify { key: String, detail: String },
}

/// What a HEAD of an object tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag without quotes, when the store gives one. Not a digest of the content on every
    /// bucket (SSE-KMS, SSE-C and multipart uploads make it something else), so nothing relies
    /// on it.
    pub etag: Option<String>,
}

/// The operations logfleet needs from an object store.
pub trait ObjectStore: Send + Sync {
    /// Stores `bytes` at `key`, overwriting. The body's MD5 goes along (`Content-MD5`), and
    /// the store refuses a body that arrives different from what was sent.
    fn put(&self, key: &str, bytes: Vec<u8>)
    -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Size (and ETag) of an object; [`StoreError::NotFound`] when there is none.
    fn head(&self, key: &str) -> impl Future<Output = Result<ObjectInfo, StoreError>> + Send;
    /// An object's bytes; [`StoreError::NotFound`] when there is none.
    fn get(&self, key: &str) -> impl Future<Output = Result<Vec<u8>, StoreError>> + Send;
    /// All keys under `prefix`, sorted.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Removes an object; removing one that does not exist is no error.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Puts `bytes` at `key` (the store checks their MD5 on the way in), then checks with a HEAD
/// that the store holds an object of exactly that size.
pub async fn put_verified(
    store: &impl ObjectStore,
    key: &str,
    bytes: Vec<u8>,
) -> Result<(), StoreError> {
    let len = bytes.len() as u64;
    store.put(key, bytes).await?;
    let info = store.head(key).await?;
    if info.size != len {
        return Err(StoreError::Verify {
            key: key.into(),
            detail: format!("size {} != {len}", info.size),
        });
    }
    Ok(())
}

/// The base64 MD5 of a body, as `Content-MD5` carries it.
pub fn content_md5(bytes: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use md5::Digest;

    use super::*;

    /// On SSE-KMS and SSE-C buckets the ETag is not the body's MD5. The
    /// upload's integrity rests on `Content-MD5`, which the server checks, so an upload there
    /// verifies like anywhere else.
    #[tokio::test]
    async fn an_upload_verifies_where_the_etag_is_not_an_md5() {
        let store = MemoryObjectStore::new();
        let body = b"{\"sequenceNumber\":0}\n".to_vec();
        put_verified(&store, "logs/ep/chunk", body.clone())
            .await
            .expect("verified");
        let info = store.head("logs/ep/chunk").await.unwrap();
        let md5_hex: String = md5::Md5::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(info.etag.as_deref(), Some(md5_hex.as_str()));
        assert_eq!(store.get("logs/ep/chunk").await.unwrap(), body);
    }
}
