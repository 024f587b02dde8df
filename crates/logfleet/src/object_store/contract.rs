//! The contract every [`ObjectStore`] keeps, as one suite: unit tests run it on
//! [`super::MemoryObjectStore`], the integration tests on a real S3 server.

use super::{ObjectStore, StoreError, put_verified};

/// Runs the whole contract against `store`, using only keys under `prefix` (which must hold
/// nothing yet). Panics, naming the broken rule, when `store` breaks one.
pub async fn check(store: &impl ObjectStore, prefix: &str) {
    let key = |k: &str| format!("{prefix}{k}");
    assert!(
        store.list(prefix).await.unwrap().is_empty(),
        "the prefix starts empty"
    );
    // Missing objects are NotFound, not another error.
    assert!(
        matches!(store.get(&key("none")).await, Err(StoreError::NotFound(_))),
        "get of a missing key is NotFound"
    );
    assert!(
        matches!(store.head(&key("none")).await, Err(StoreError::NotFound(_))),
        "head of a missing key is NotFound"
    );
    // What goes in comes back, byte for byte, with its size.
    let body: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
    put_verified(store, &key("a/1"), body.clone())
        .await
        .expect("put_verified of a fresh key");
    assert_eq!(
        store.get(&key("a/1")).await.unwrap(),
        body,
        "get returns the bytes put"
    );
    assert_eq!(
        store.head(&key("a/1")).await.unwrap().size,
        body.len() as u64
    );
    // An empty object is an object.
    store.put(&key("a/0"), Vec::new()).await.unwrap();
    assert_eq!(store.head(&key("a/0")).await.unwrap().size, 0);
    // A put overwrites.
    store.put(&key("a/1"), b"second".to_vec()).await.unwrap();
    assert_eq!(store.get(&key("a/1")).await.unwrap(), b"second");
    // List: every key under the prefix, sorted, and nothing else.
    store.put(&key("b/2"), b"x".to_vec()).await.unwrap();
    store.put(&key("a/10"), b"y".to_vec()).await.unwrap();
    assert_eq!(
        store.list(prefix).await.unwrap(),
        vec![key("a/0"), key("a/1"), key("a/10"), key("b/2")],
        "list is sorted and complete"
    );
    assert_eq!(
        store.list(&key("a/1")).await.unwrap(),
        vec![key("a/1"), key("a/10")],
        "list filters by prefix"
    );
    // Delete removes; deleting again, or something that never was, is no error.
    store.delete(&key("a/1")).await.unwrap();
    store.delete(&key("a/1")).await.unwrap();
    store.delete(&key("never")).await.unwrap();
    assert!(matches!(
        store.get(&key("a/1")).await,
        Err(StoreError::NotFound(_))
    ));
    for k in store.list(prefix).await.unwrap() {
        store.delete(&k).await.unwrap();
    }
    assert!(store.list(prefix).await.unwrap().is_empty(), "all deleted");
}
