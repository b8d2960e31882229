//! Schema evolution: `ALTER TABLE … ADD COLUMN` and `… ALTER COLUMN … SET DATA TYPE`, through
//! Apiary's doors; old cells read under the new schema, pruning right across versions.

use std::sync::Arc;

use apiary::Apiary;
use apiary::catalog::protocol::feature;
use apiary::catalog::{Action, CellRecord, Frame, FrameSnapshot};
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;

use crate::support::{
    assert_rows, assert_scalars, backends, door, door_err, frame_by_k, metric, open, plan, query,
    scalar, sql,
};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_and_widened_columns_read_old_cells_under_the_new_schema() {
    for b in backends() {
        let (ap, ctx) = frame(&b.url).await;
        let before = cells(&ctx).await;
        alter(
            &ap,
            &ctx,
            &[
                "ALTER TABLE h.b.t ADD COLUMN note VARCHAR",
                "ALTER TABLE h.b.t ALTER COLUMN id SET DATA TYPE BIGINT",
                "ALTER TABLE h.b.t ALTER COLUMN v SET DATA TYPE DOUBLE, ADD COLUMN IF NOT EXISTS note VARCHAR",
            ],
        )
        .await;
        assert_eq!(cells(&ctx).await, before, "{b}: no cell is rewritten");
        assert_eq!(
            query(&ctx, COLUMNS).await,
            ["id|Int64", "k|Utf8View", "v|Float64", "note|Utf8View"],
            "{b}"
        );
        sql(
            &ctx,
            "INSERT INTO h.b.t VALUES (5000000000, 'a', 2.25, 'new')",
        )
        .await;
        assert_eq!(
            query(&ctx, "SELECT id, k, v, note FROM h.b.t ORDER BY id").await,
            ["1|a|1.5|NULL", "2|b|NULL|NULL", "5000000000|a|2.25|new"],
            "{b}"
        );
        // Pruning by the widened column's statistics, old cells and new.
        let text = plan(
            &ctx,
            "EXPLAIN ANALYZE SELECT id FROM h.b.t WHERE id > 4000000000",
        )
        .await;
        assert_eq!(metric(&text, "cells_scanned"), 1, "{b}: {text}");
        assert_scalars(
            &ctx,
            &b,
            &[
                ("SELECT count(*) FROM h.b.t WHERE note IS NULL", "2"),
                ("SELECT count(*) FROM h.b.t WHERE v > 2", "1"),
            ],
        )
        .await;
        // A past version reads with its own schema.
        assert_eq!(
            query(&ctx, "SELECT * FROM apiary_version('h.b.t', 1) ORDER BY id").await,
            ["1|a|1.5", "2|b|NULL"],
            "{b}"
        );
        let history = query(
            &ctx,
            "SELECT operation, action FROM apiary_history('h.b.t') WHERE version BETWEEN 2 AND 4 ORDER BY version",
        )
        .await;
        assert_eq!(history, ["ALTER TABLE|set_schema"; 3], "{b}");
        assert_eq!(
            query(
                &ctx,
                "SELECT schema_change FROM apiary_history('h.b.t') ORDER BY version"
            )
            .await,
            [
                "NULL",
                "NULL",
                "add note Utf8View",
                "id Int32 → Int64",
                "v Float32 → Float64",
                "NULL"
            ],
            "{b}"
        );
        // The frame now declares the feature: a build that cannot read it is fenced.
        declares(&ap, feature::SCHEMA_EVOLUTION, &b).await;
        // Row-level changes and compaction work on the evolved frame.
        assert_scalars(
            &ctx,
            &b,
            &[
                ("UPDATE h.b.t SET note = 'old' WHERE note IS NULL", "2"),
                ("SELECT count(*) FROM h.b.t WHERE note = 'old'", "2"),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn changes_that_would_lose_or_misread_data_are_refused() {
    let (ap, ctx) = frame("memory://").await;
    let before = scalar(&ctx, "SELECT max(version) FROM apiary_history('h.b.t')").await;
    for (stmt, needle) in [
        (
            "ALTER TABLE h.b.t ADD COLUMN n INT NOT NULL",
            "must be nullable",
        ),
        (
            "ALTER TABLE h.b.t ADD COLUMN v INT",
            "column v already exists",
        ),
        (
            "ALTER TABLE h.b.t ALTER COLUMN id SET DATA TYPE SMALLINT",
            "cannot change from Int32 to Int16",
        ),
        (
            "ALTER TABLE h.b.t ALTER COLUMN v SET DATA TYPE INT",
            "cannot change from Float32 to Int32",
        ),
        (
            "ALTER TABLE h.b.t ALTER COLUMN k SET DATA TYPE VARCHAR",
            "partition column",
        ),
        (
            "ALTER TABLE h.b.t ALTER COLUMN nope SET DATA TYPE BIGINT",
            "no column named nope",
        ),
        (
            "ALTER TABLE h.b.t RENAME COLUMN k TO kind",
            "k is a partition column",
        ),
        (
            "ALTER TABLE h.b.t RENAME COLUMN v TO id",
            "column id already exists",
        ),
        (
            "ALTER TABLE h.b.t RENAME COLUMN nope TO x",
            "no column named nope",
        ),
        (
            "ALTER TABLE h.b.t DROP COLUMN v",
            "DROP COLUMN v is not supported",
        ),
        (
            "ALTER TABLE h.b.nope ADD COLUMN x INT",
            "frame h.b.nope not found",
        ),
    ] {
        let err = door_err(&ap, &ctx, stmt).await;
        assert!(err.contains(needle), "{stmt}: {needle:?} not in {err}");
    }
    assert_eq!(
        scalar(&ctx, "SELECT max(version) FROM apiary_history('h.b.t')").await,
        before
    );
    // A plain DataFusion session has no ALTER TABLE.
    let err = crate::support::sql_err(&ctx, "ALTER TABLE h.b.t ADD COLUMN x INT").await;
    assert!(!err.is_empty());
}

/// A renamed column is found in cells written before by its column id, not its name: a column
/// added later under the old name reads NULL there, names can be swapped, and statistics,
/// pruning, predicates, row changes, compaction and time travel follow the rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_columns_are_found_by_id_in_old_cells() {
    for b in backends() {
        let (ap, ctx) = frame(&b.url).await;
        let before = cells(&ctx).await;
        alter(&ap, &ctx, &RENAME_V_TO_W_AND_ADD_V).await;
        assert_eq!(cells(&ctx).await, before, "{b}: no cell is rewritten");
        // Version 1 holds a float v, the frame a string v now.
        assert_eq!(
            query(&ctx, "SELECT * FROM apiary_version('h.b.t', 1) ORDER BY id").await,
            ["1|a|1.5", "2|b|NULL"],
            "{b}"
        );
        sql(&ctx, "INSERT INTO h.b.t VALUES (3, 'a', 4.5, 'new v')").await;
        assert_eq!(
            query(&ctx, "SELECT id, w, v FROM h.b.t ORDER BY id").await,
            ["1|1.5|NULL", "2|NULL|NULL", "3|4.5|new v"],
            "{b}: the old cells' v is w now, and the new v is NULL there"
        );
        // Swap two names in one statement.
        let swap = "ALTER TABLE h.b.t RENAME COLUMN w TO tmp, RENAME COLUMN v TO w, RENAME COLUMN tmp TO v";
        door(&ap, &ctx, swap).await;
        assert_rows(
            &ctx,
            &b,
            &[
                (
                    COLUMNS,
                    &["id|Int32", "k|Utf8View", "v|Float32", "w|Utf8View"],
                ),
                (
                    "SELECT id, v, w FROM h.b.t ORDER BY id",
                    &["1|1.5|NULL", "2|NULL|NULL", "3|4.5|new v"],
                ),
                // Predicates on a renamed column, inside cells and by the ledger's statistics.
                ("SELECT id FROM h.b.t WHERE v < 2", &["1"]),
                (
                    "SELECT id FROM h.b.t WHERE w IS NULL ORDER BY id",
                    &["1", "2"],
                ),
            ],
        )
        .await;
        let text = plan(&ctx, "EXPLAIN ANALYZE SELECT id FROM h.b.t WHERE v > 4").await;
        assert_eq!(metric(&text, "cells_scanned"), 1, "{b}: {text}");
        // A past version reads with its own names.
        assert_eq!(
            query(
                &ctx,
                "SELECT id, v FROM apiary_version('h.b.t', 1) ORDER BY id"
            )
            .await,
            ["1|1.5", "2|NULL"],
            "{b}"
        );
        assert_eq!(
            query(&ctx, "SELECT * FROM apiary_version('h.b.t', 4) ORDER BY id").await,
            ["1|a|1.5|NULL", "2|b|NULL|NULL", "3|a|4.5|new v"],
            "{b}: id, k, w, v before the swap"
        );
        assert_eq!(
            query(&ctx, "SELECT version, schema_change FROM apiary_history('h.b.t') WHERE action = 'set_schema' ORDER BY version").await,
            [
                "2|rename v to w",
                "3|add v Utf8View",
                "5|rename w to v; rename v to w"
            ],
            "{b}"
        );
        declares(&ap, feature::COLUMN_IDS, &b).await;
        // Row changes and compaction on the renamed frame.
        assert_scalars(
            &ctx,
            &b,
            &[
                ("UPDATE h.b.t SET w = 'upd' WHERE v = 1.5", "1"),
                ("DELETE FROM h.b.t WHERE v IS NULL", "1"),
            ],
        )
        .await;
        sql(&ctx, "SELECT * FROM apiary_compact('h.b.t')").await;
        assert_eq!(
            query(&ctx, "SELECT id, k, v, w FROM h.b.t ORDER BY id").await,
            ["1|a|1.5|upd", "3|a|4.5|new v"],
            "{b}"
        );
        // Upkeep reads every entry under the schema of its time.
        assert!(
            query(&ctx, "SELECT * FROM apiary_check('h.b.t')")
                .await
                .is_empty(),
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
            query(&ctx2, "SELECT id, v, w FROM h.b.t ORDER BY id").await,
            ["1|1.5|upd", "3|4.5|new v"],
            "{b}"
        );
    }
}

/// An append written before a rename and committed after it: its cell holds the old names and
/// no ids, and its statistics follow the rename as it is rebased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_written_before_a_rename_lands_under_the_new_names() {
    for b in backends() {
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
}

/// Two schema changes from the same version: one fails naming the other. An append written
/// under the old schema and committed after a change lands, its rows NULL in the new column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_race_each_other_and_appends() {
    for b in backends() {
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
}

/// `Frame::merge_schema` (Python: `write_to_frame(…, schema_mode="merge")`): a write whose data
/// has new columns or wider types evolves the frame first, as delta-rs's `schema_mode="merge"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_can_merge_its_schema_into_the_frame() {
    for b in backends() {
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
}

/// `SET apiary.schema_mode = 'merge'`: an INSERT whose rows have columns the frame lacks adds
/// them (nullable) and widens types, in a `set_schema` commit before its own; listed columns
/// are matched by name, unlisted ones by position with extra trailing columns added under
/// their names. Without the setting the mismatch stays DataFusion's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_can_merge_its_schema_when_asked() {
    for b in backends() {
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
}

/// The columns of `h.b.t` and their types, in order.
const COLUMNS: &str = "SELECT column_name, data_type FROM information_schema.columns \
                       WHERE table_name = 't' ORDER BY ordinal_position";

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

/// The paths of the active cells of `h.b.t`.
async fn cells(ctx: &SessionContext) -> Vec<String> {
    query(ctx, "SELECT path FROM apiary_cells('h.b.t') ORDER BY path").await
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
