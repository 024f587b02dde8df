//! Object storage for chunks: a small [`ObjectStore`] trait and its S3 implementation.
//!
//! The archive-worker needs four things of a store: put an object, read back its size and ETag
//! to verify the upload, get it, and list keys. Any S3-compatible server (AWS S3, MinIO, s3s-fs)
//! provides them through [`S3ObjectStore`].

use std::future::Future;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

use crate::config::S3Settings;

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
    pub size: u64,
    /// ETag without quotes.
    pub etag: Option<String>,
}

/// The operations logfleet needs from an object store.
pub trait ObjectStore: Send + Sync {
    fn put(&self, key: &str, bytes: Vec<u8>)
    -> impl Future<Output = Result<(), StoreError>> + Send;
    fn head(&self, key: &str) -> impl Future<Output = Result<ObjectInfo, StoreError>> + Send;
    fn get(&self, key: &str) -> impl Future<Output = Result<Vec<u8>, StoreError>> + Send;
    /// All keys under `prefix`, sorted.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

/// Puts `bytes` at `key`, then checks with a HEAD that the store holds exactly those bytes: the
/// size must match and, when the ETag is a plain MD5 (single-part upload), so must the digest.
pub async fn put_verified(
    store: &impl ObjectStore,
    key: &str,
    bytes: Vec<u8>,
) -> Result<(), StoreError> {
    use md5::Digest;
    let len = bytes.len() as u64;
    let md5 = hex::encode(md5::Md5::digest(&bytes));
    store.put(key, bytes).await?;
    let info = store.head(key).await?;
    if info.size != len {
        return Err(StoreError::Verify {
            key: key.into(),
            detail: format!("size {} != {len}", info.size),
        });
    }
    if let Some(etag) = info.etag.filter(|e| e.len() == 32 && !e.contains('-'))
        && !etag.eq_ignore_ascii_case(&md5)
    {
        return Err(StoreError::Verify {
            key: key.into(),
            detail: format!("ETag {etag} != MD5 {md5}"),
        });
    }
    Ok(())
}

/// An S3 bucket through the official SDK.
#[derive(Clone, Debug)]
pub struct S3ObjectStore {
    client: Client,
    bucket: String,
}

impl S3ObjectStore {
    /// Builds a client from the settings; credentials come from the environment
    /// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance roles).
    pub async fn connect(s: &S3Settings) -> Result<Self, StoreError> {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(s.region.clone()));
        if !s.endpoint.is_empty() {
            loader = loader.endpoint_url(&s.endpoint);
        }
        let shared = loader.load().await;
        let mut conf =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(s.force_path_style);
        if shared.credentials_provider().is_none() {
            // Without any credentials in the environment, fall back to anonymous-looking static
            // ones so local servers that ignore auth still work; AWS will refuse them clearly.
            conf = conf.credentials_provider(Credentials::new(
                "logfleet",
                "logfleet",
                None,
                None,
                "logfleet-default",
            ));
        }
        let store = Self {
            client: Client::from_conf(conf.build()),
            bucket: s.bucket.clone(),
        };
        if s.create_bucket {
            store.ensure_bucket().await?;
        }
        Ok(store)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Round trip to the server: HEAD of the bucket; used by readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| req("HeadBucket", &self.bucket, e))?;
        Ok(())
    }

    /// Creates the bucket unless it exists.
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let svc = e.as_service_error();
                // Already there (ours, or made by a racing worker) counts as created.
                let exists = svc.is_some_and(|s| {
                    s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
                }) || self
                    .client
                    .head_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .is_ok();
                if exists {
                    Ok(())
                } else {
                    Err(req("CreateBucket", &self.bucket, e))
                }
            }
        }
    }
}

fn req(op: &'static str, key: &str, e: impl std::error::Error) -> StoreError {
    let mut message = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    StoreError::Request {
        op,
        key: key.into(),
        message,
    }
}

impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/x-ndjson")
            .content_encoding("gzip")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| req("PutObject", key, e))?;
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(ObjectInfo {
                size: o.content_length().unwrap_or(-1).max(0) as u64,
                etag: o.e_tag().map(|t| t.trim_matches('"').to_owned()),
            }),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                Err(StoreError::NotFound(key.into()))
            }
            Err(e) => Err(req("HeadObject", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound(key.into()));
            }
            Err(e) => return Err(req("GetObject", key, e)),
        };
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| req("GetObject", key, e))?;
        Ok(data.into_bytes().to_vec())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| req("ListObjectsV2", prefix, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        Ok(keys)
    }
}
