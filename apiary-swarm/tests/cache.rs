//! The local cell cache: read through once, then local; bounded; least recently used goes.

use std::sync::Arc;

use apiary_catalog::testing::Counting;
use apiary_swarm::cache::CellCache;
use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload};

#[tokio::test]
async fn cells_are_fetched_once_served_locally_and_evicted_least_recent_first() {
    let dir = tempfile::tempdir().unwrap();
    let meadow = Counting::new(Arc::new(InMemory::new()));
    for i in 0..3 {
        let body = Bytes::from(vec![i as u8; 1000]);
        meadow
            .put(
                &Path::from(format!("h/b/f/cell_{i}.parquet")),
                PutPayload::from_bytes(body),
            )
            .await
            .unwrap();
    }
    meadow
        .put(
            &Path::from("h/b/f/_ledger/00000000000000000000.json"),
            PutPayload::from_static(b"{}"),
        )
        .await
        .unwrap();
    meadow.take();
    let cache = CellCache::new(meadow.clone(), dir.path().to_path_buf(), 2500).unwrap();
    let cell = |i: usize| Path::from(format!("h/b/f/cell_{i}.parquet"));

    // First read fetches the whole cell; later ranged reads are local.
    let r = cache
        .get_opts(&cell(0), GetOptions::new().with_range(Some(10..20)))
        .await
        .unwrap();
    assert_eq!(r.meta.location, cell(0));
    assert_eq!(r.bytes().await.unwrap(), Bytes::from(vec![0u8; 10]));
    assert_eq!(meadow.take().get("get"), Some(&1));
    let r = cache.get_range(&cell(0), 990..1000).await.unwrap();
    assert_eq!(r.len(), 10);
    assert!(meadow.take().is_empty(), "served from the cache");
    // Non-cell objects always go to the meadow.
    cache
        .get(&Path::from("h/b/f/_ledger/00000000000000000000.json"))
        .await
        .unwrap();
    assert_eq!(meadow.take().get("get"), Some(&1));

    // Two cells fit (2 × 1000 ≤ 2500); the third evicts the least recently used.
    cache.get(&cell(1)).await.unwrap();
    cache.get(&cell(0)).await.unwrap(); // cell 0 used more recently than cell 1
    cache.get(&cell(2)).await.unwrap();
    let status = cache.status();
    assert_eq!((status.cells, status.bytes), (2, 2000));
    assert_eq!(
        cache.cached_cells(10),
        vec![cell(2).to_string(), cell(0).to_string()]
    );
    meadow.take();
    cache.get(&cell(1)).await.unwrap();
    assert_eq!(meadow.take().get("get"), Some(&1), "cell 1 was evicted");
    assert_eq!(status.hits, 2);

    // A new cache over the same folder knows what is there.
    let again = CellCache::new(meadow.clone(), dir.path().to_path_buf(), 2500).unwrap();
    assert_eq!(again.status().cells, 2);
}
