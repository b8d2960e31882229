//! Schema evolution: `ALTER TABLE … ADD COLUMN` and `… ALTER COLUMN … SET DATA TYPE`, through
//! Apiary's doors; old cells read under the new schema, pruning right across versions.

use std::sync::Arc;

use apiary::Apiary;
use apiary::catalog::protocol::feature;
use apiary::catalog::{Action, CellRecord, Frame, FrameSnapshot};
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;

use crate::support::{Backend, door, door_err, frame_by_k, metric, open, plan, query, scalar, sql};

/// `h.b.t (id INT, k, v REAL)` partitioned by `k`: rows 1 and 2, in one cell each.
async fn frame(url: &str) -> (Apiary, SessionContext) {
    let columns = "id INT NOT NULL, k VARCHAR NOT NULL, v REAL";
    let rows = "INSERT INTO h.b.t VALUES (1, 'a', 1.5), (2, 'b', NULL)";
    frame_by_k(url, columns, &[rows]).await
}

/// Asserts that frame h.b.t declares protocol feature `name` for readers and writers.
async fn declares(ap: &Apiary, name: &str, b: &impl std::fmt::Display) {
    let f = frame_t(ap).await;
    let protocol = f.ledger().latest().protocol.clone();
    assert!(
        protocol.reader_features.contains(name) && protocol.writer_features.contains(name),
        "{b}: {protocol:?}"
    );
}

/// What SQL cannot show of schema evolution (its SQL behaviour — added, widened and renamed
/// columns, old cells read under the new schema, past versions under their own, refusals — is
/// `tests/slt/alter.slt`): a widened and a renamed column prune cells by the ledger's statistics
/// of old cells, the frame declares the protocol features a reader needs, compaction of the
/// evolved frame leaves cells to cleanse, and a reopened meadow reads the same.
async fn evolved_frames_prune_declare_their_features_and_reopen(b: Backend) {
    let (ap, ctx) = frame(&b.url).await;
    alter(
        &ap,
        &ctx,
        &["ALTER TABLE h.b.t ALTER COLUMN id SET DATA TYPE BIGINT"],
    )
    .await;
    sql(&ctx, "INSERT INTO h.b.t VALUES (5000000000, 'a', 2.25)").await;
    let text = plan(
        &ctx,
        "EXPLAIN ANALYZE SELECT id FROM h.b.t WHERE id > 4000000000",
    )
    .await;
    assert_eq!(metric(&text, "cells_scanned"), 1, "{b}: {text}");
    // The frame now declares the feature: a build that cannot read it is fenced.
    declares(&ap, feature::SCHEMA_EVOLUTION, &b).await;

    alter(&ap, &ctx, &RENAME_V_TO_W_AND_ADD_V).await;
    sql(&ctx, "INSERT INTO h.b.t VALUES (3, 'a', 4.5, 'new v')").await;
    let text = plan(&ctx, "EXPLAIN ANALYZE SELECT id FROM h.b.t WHERE w > 4").await;
    assert_eq!(metric(&text, "cells_scanned"), 1, "{b}: {text}");
    declares(&ap, feature::COLUMN_IDS, &b).await;

    sql(&ctx, "SELECT * FROM apiary_compact('h.b.t')").await;
    let rows = [
        "1|1.5|NULL",
        "2|NULL|NULL",
        "3|4.5|new v",
        "5000000000|2.25|NULL",
    ];
    assert_eq!(
        query(&ctx, "SELECT id, w, v FROM h.b.t ORDER BY id").await,
        rows,
        "{b}"
    );
    let removed = query(
        &ctx,
        "SELECT count(*) FROM apiary_cleanse('h.b.t', 0, false, true) WHERE kind = 'cell'",
    )
    .await;
    assert_ne!(removed, ["0"], "{b}: compaction left cells to cleanse");
    // Reopened, the frame reads the same.
    let again = open(&b.url).await;
    let ctx2 = again.session().unwrap();
    assert_eq!(
        query(&ctx2, "SELECT id, w, v FROM h.b.t ORDER BY id").await,
        rows,
        "{b}"
    );
}

/// A plain DataFusion session has no `ALTER TABLE`: only Apiary's doors take it.
#[tokio::test]
async fn a_plain_session_refuses_alter_table() {
    let (_ap, ctx) = frame("memory://").await;
    let err = crate::support::sql_err(&ctx, "ALTER TABLE h.b.t ADD COLUMN x INT").await;
    assert!(!err.is_empty());
    assert_eq!(
        scalar(&ctx, "SELECT max(version) FROM apiary_history('h.b.t')").await,
        "1"
    );
}

/// An append written before a rename and committed after it: its cell holds the old names and
/// no ids, and its statistics follow the rename as it is rebased.
async fn an_append_written_before_a_rename_lands_under_the_new_names(b: Backend) {
    let (ap, ctx, f, read) = frame_and_snapshot(&b.url).await;
    let batch = RecordBatch::try_new(
        Arc::clone(&read.schema),
        vec![
            Arc::new(Int32Array::from(vec![7])),
            Arc::new(datafusion::arrow::array::StringViewArray::from(vec!["a"])),
            Arc::new(datafusion::arrow::array::Float32Array::from(vec![9.5])),
        ],
    )
    .unwrap();
    let written = write_cells(&f, &read, batch).await;
    alter(&ap, &ctx, &RENAME_V_TO_W_AND_ADD_V).await;
    f.commit_cells(&read, "INSERT", written, false)
        .await
        .unwrap();
    assert_eq!(
        query(&ctx, "SELECT id, w, v FROM h.b.t ORDER BY id").await,
        ["1|1.5|NULL", "2|NULL|NULL", "7|9.5|NULL"],
        "{b}"
    );
    let text = plan(&ctx, "EXPLAIN ANALYZE SELECT id FROM h.b.t WHERE w > 9").await;
    assert_eq!(metric(&text, "cells_scanned"), 1, "{b}: {text}");
    assert_eq!(
        query(&ctx, "SELECT id FROM h.b.t WHERE w > 9").await,
        ["7"],
        "{b}"
    );
}

/// Two schema changes from the same version: one fails naming the other. An append written
/// under the old schema and committed after a change lands, its rows NULL in the new column.
async fn schema_changes_race_each_other_and_appends(b: Backend) {
    let (_ap, ctx, f, read) = frame_and_snapshot(&b.url).await;
    let with = |name: &str| {
        let mut fields = read.schema.fields().to_vec();
        fields.push(Arc::new(Field::new(name, DataType::Utf8, true)));
        Action::SetSchema {
            schema: Arc::new(Schema::new(fields)),
        }
    };
    // An append written under the old schema (id and k, neither nullable), not committed yet.
    let ids: ArrayRef = Arc::new(Int32Array::from(vec![7, 8]));
    let ks: ArrayRef = Arc::new(StringArray::from(vec!["a", "c"]));
    let batch = RecordBatch::try_from_iter([("id", ids), ("k", ks)]).unwrap();
    let written = write_cells(&f, &read, batch).await;

    let (first, second) = tokio::join!(
        f.commit_action(&read, "ALTER TABLE", with("x")),
        f.commit_action(&read, "ALTER TABLE", with("y")),
    );
    let errors: Vec<String> = [first.err(), second.err()]
        .into_iter()
        .flatten()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{b}: {errors:?}");
    assert!(
        errors[0].contains("changed the frame's schema or properties first"),
        "{b}: {}",
        errors[0]
    );

    f.commit_cells(&read, "INSERT", written, false)
        .await
        .unwrap();
    let added = if scalar(&ctx, "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'x'").await == "1" { "x" } else { "y" };
    assert_eq!(
        query(
            &ctx,
            &format!("SELECT id, {added} FROM h.b.t WHERE id > 6 ORDER BY id")
        )
        .await,
        ["7|NULL", "8|NULL"],
        "{b}"
    );
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.t").await, "4", "{b}");
}

/// `Frame::merge_schema` (Python: `write_to_frame(…, schema_mode="merge")`): a write whose data
/// has new columns or wider types evolves the frame first, as delta-rs's `schema_mode="merge"`.
async fn a_write_can_merge_its_schema_into_the_frame(b: Backend) {
    let (ap, ctx) = frame(&b.url).await;
    let f = frame_t(&ap).await;
    let incoming = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Utf8, false),
        Field::new("tag", DataType::Utf8, false),
    ]));
    let info = f.merge_schema(&incoming, "WRITE").await.unwrap();
    assert!(info.is_some(), "{b}");
    assert_eq!(
        query(&ctx, "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position").await,
        ["id|Int64|NO", "k|Utf8View|NO", "v|Float32|YES", "tag|Utf8|YES"],
        "{b}"
    );
    // Nothing more to merge: no commit.
    assert!(f.merge_schema(&incoming, "WRITE").await.unwrap().is_none());
    // A narrower type or a column the data lacks changes nothing; a type that cannot widen
    // is left for the write to refuse.
    let other = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int16, false),
        Field::new("v", DataType::Utf8, true),
    ]));
    assert!(
        f.merge_schema(&other, "WRITE").await.unwrap().is_none(),
        "{b}"
    );
}

/// `SET apiary.schema_mode = 'merge'`: an INSERT whose rows have columns the frame lacks adds
/// them (nullable) and widens types, in a `set_schema` commit before its own; listed columns
/// are matched by name, unlisted ones by position with extra trailing columns added under
/// their names. Without the setting the mismatch stays DataFusion's error.
async fn an_insert_can_merge_its_schema_when_asked(b: Backend) {
    let (ap, ctx) = frame(&b.url).await;
    let with_tag = "INSERT INTO h.b.t (id, k, tag) VALUES (3, 'a', 'x')";
    let err = door_err(&ap, &ctx, with_tag).await;
    assert!(err.contains("tag"), "{b}: {err}");
    sql(&ctx, "SET apiary.schema_mode = 'merge'").await;
    assert_eq!(door(&ap, &ctx, with_tag).await, ["1"], "{b}");
    assert_eq!(
        door(
            &ap,
            &ctx,
            "INSERT INTO h.b.t SELECT CAST(4000000000 AS BIGINT), 'b', 2.5, 'y', 42 AS score"
        )
        .await,
        ["1"],
        "{b}"
    );
    assert_eq!(
        query(&ctx, "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position").await,
        ["id|Int64|NO", "k|Utf8View|NO", "v|Float64|YES", "tag|Utf8|YES", "score|Int64|YES"],
        "{b}"
    );
    assert_eq!(
        query(&ctx, "SELECT id, k, v, tag, score FROM h.b.t ORDER BY id").await,
        [
            "1|a|1.5|NULL|NULL",
            "2|b|NULL|NULL|NULL",
            "3|a|NULL|x|NULL",
            "4000000000|b|2.5|y|42"
        ],
        "{b}"
    );
    let history = query(
        &ctx,
        "SELECT operation, action FROM apiary_history('h.b.t') WHERE version > 1 ORDER BY version",
    )
    .await;
    assert_eq!(
        history,
        [
            "INSERT|set_schema",
            "INSERT|add_cells",
            "INSERT|set_schema",
            "INSERT|add_cells"
        ],
        "{b}"
    );
    for (insert, named) in [
        // A new column whose every value is NULL has no type to add: refused, naming it.
        (
            "INSERT INTO h.b.t (id, k, nothing) VALUES (6, 'a', NULL)",
            &["nothing", "no type"][..],
        ),
        // A value that fits no widening is still refused, and nothing is committed.
        (
            "INSERT INTO h.b.t (id, k, v) VALUES (5, 'a', 'text')",
            &["v"],
        ),
    ] {
        let err = door_err(&ap, &ctx, insert).await;
        assert!(named.iter().all(|n| err.contains(n)), "{b}: {err}");
    }
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM h.b.t").await, "4", "{b}");
}

/// Renames `v` to `w`, then adds a string column `v`.
const RENAME_V_TO_W_AND_ADD_V: [&str; 2] = [
    "ALTER TABLE h.b.t RENAME COLUMN v TO w",
    "ALTER TABLE h.b.t ADD COLUMN v VARCHAR",
];

/// Runs each of `statements` through Apiary's door.
async fn alter(ap: &Apiary, ctx: &SessionContext, statements: &[&str]) {
    for statement in statements {
        door(ap, ctx, statement).await;
    }
}

/// Frame `h.b.t` of `ap`.
async fn frame_t(ap: &Apiary) -> Frame {
    ap.providers().frame("h", "b", "t").await.unwrap().unwrap()
}

/// [`frame`] on `url`, frame `h.b.t` itself and its latest snapshot.
async fn frame_and_snapshot(url: &str) -> (Apiary, SessionContext, Frame, Arc<FrameSnapshot>) {
    let (ap, ctx) = frame(url).await;
    let f = frame_t(&ap).await;
    let read = f.ledger().refresh().await.unwrap();
    (ap, ctx, f, read)
}

/// Writes `batch` into cells of `f` as of `read`, committing nothing.
async fn write_cells(f: &Frame, read: &FrameSnapshot, batch: RecordBatch) -> Vec<Arc<CellRecord>> {
    let batches = futures::stream::iter([Ok::<_, apiary::catalog::CatalogError>(batch)]);
    let writer = f.cell_writer(read).unwrap();
    writer.write_stream(batches).await.unwrap()
}

apiary_catalog::each_backend!(
    evolved_frames_prune_declare_their_features_and_reopen,
    an_append_written_before_a_rename_lands_under_the_new_names,
    schema_changes_race_each_other_and_appends,
    a_write_can_merge_its_schema_into_the_frame,
    an_insert_can_merge_its_schema_when_asked,
);
