//! Opening meadows and the conditional create.

use apiary_catalog::{Created, Meadow, MeadowKind};
use bytes::Bytes;

use crate::support::{Backend, race, s3_url};

#[tokio::test]
async fn every_url_form_opens_with_one_layout() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Meadow::open(dir.path().join("plain").to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(plain.kind(), MeadowKind::Local);
    let file = Meadow::open(&format!("file://{}/f", dir.path().display()))
        .await
        .unwrap();
    assert_eq!(file.kind(), MeadowKind::Local);
    assert_eq!(file.object_store_url().as_str(), "file:///");
    let mem = Meadow::open("memory://").await.unwrap();
    assert_eq!(mem.kind(), MeadowKind::Memory);
    let s3 = Meadow::open(&s3_url()).await.unwrap();
    assert_eq!(s3.kind(), MeadowKind::S3);
    for m in [&plain, &file, &mem, &s3] {
        m.put("_registry/x.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let listed = m.list("_registry").await.unwrap();
        assert_eq!(listed.len(), 1, "{m:?}");
        assert_eq!(
            m.relative(&listed[0].location),
            Some("_registry/x.json"),
            "{m:?}"
        );
    }
    // The local layout is plain folders below the root.
    assert!(dir.path().join("plain/_registry/x.json").is_file());
}

#[tokio::test]
async fn s3_options_in_the_url_override_the_environment() {
    let endpoint = std::env::var("AWS_ENDPOINT").expect("AWS_ENDPOINT from the S3 test server");
    // A wrong endpoint in the environment is overridden by the URL's own.
    let url = format!("{}?endpoint={}&region=eu-west-1", s3_url(), endpoint);
    let m = Meadow::open(&url).await.unwrap();
    m.put("a", Bytes::from_static(b"1")).await.unwrap();
    assert_eq!(m.get("a").await.unwrap().unwrap().as_ref(), b"1");
}

#[tokio::test]
async fn a_missing_bucket_is_an_error_naming_it() {
    let err = Meadow::open("s3://no-such-bucket-apiary/x")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-bucket-apiary"), "{err}");
    assert!(err.contains("cannot be opened"), "{err}");
}

async fn conditional_create_has_exactly_one_winner(b: Backend) {
    let meadow = Meadow::open(&b.url).await.unwrap();
    for round in 0..10 {
        let key = format!("race/{round}.json");
        let outcomes = race(16, |i, start| {
            let (m, key) = (meadow.clone(), key.clone());
            async move {
                start.wait().await;
                let body = Bytes::from(format!("writer {i}"));
                (i, m.create(&key, body).await.unwrap())
            }
        })
        .await;
        let mut winners = vec![];
        for (i, outcome) in outcomes {
            if outcome == Created::Yes {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "{b}: round {round}: winners {winners:?}");
        let body = meadow.get(&key).await.unwrap().unwrap();
        assert_eq!(body, Bytes::from(format!("writer {}", winners[0])), "{b}");
    }
}

apiary_catalog::each_backend!(conditional_create_has_exactly_one_winner,);
