//! [`S3ObjectStore`]: an S3 bucket through the official SDK (AWS S3 or any S3-compatible
//! server: MinIO, s3s-fs, ...).

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

use super::{ObjectInfo, ObjectStore, StoreError};
use crate::config::S3Settings;

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

impl S3ObjectStore {
    /// PutObject with the given `Content-MD5` (base64): the server refuses a body whose MD5
    /// differs (`BadDigest`). [`ObjectStore::put`] sends the body's own.
    pub async fn put_with_content_md5(
        &self,
        key: &str,
        bytes: Vec<u8>,
        md5: &str,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/x-ndjson")
            .content_encoding("gzip")
            .content_md5(md5)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| req("PutObject", key, e))?;
        Ok(())
    }
}

impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let md5 = super::content_md5(&bytes);
        self.put_with_content_md5(key, bytes, &md5).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| req("DeleteObject", key, e))?;
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
