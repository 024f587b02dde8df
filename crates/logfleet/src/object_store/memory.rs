//! [`MemoryObjectStore`]: objects in a map, for tests of archive logic that need no services.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{ObjectInfo, ObjectStore, StoreError};

/// An object store in memory. Clones share their objects.
#[derive(Clone, Debug, Default)]
pub struct MemoryObjectStore {
    /// Key to bytes, in key order (so `list` is sorted by construction).
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryObjectStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.objects.lock().expect("not poisoned")
    }
}

impl ObjectStore for MemoryObjectStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.objects().insert(key.to_owned(), bytes);
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        let objects = self.objects();
        let bytes = objects
            .get(key)
            .ok_or_else(|| StoreError::NotFound(key.into()))?;
        Ok(ObjectInfo {
            size: bytes.len() as u64,
            // Like an SSE-KMS bucket: an ETag that is not the content's MD5.
            etag: Some(format!("mem-{}", bytes.len())),
        })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.objects()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.into()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .objects()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.objects().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_keeps_the_contract() {
        super::super::contract::check(&MemoryObjectStore::new(), "contract/").await;
    }
}
