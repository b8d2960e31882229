//! TPC-H at scale factor 0.1: the 22 queries of DataFusion's own sqllogictest suite, run on
//! Apiary frames, each answer equal to the expected one shipped with them
//! (`tests/data/tpch/`, see its README).

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;

use crate::support::{folder_session, sql};

const TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

/// The folder of the SF 0.1 Parquet files (`scripts/tpch-data 0.1`, run by `./scripts/test.sh`).
fn data_dir() -> String {
    std::env::var("APIARY_TPCH_SF01").unwrap_or_else(|_| {
        panic!(
            "APIARY_TPCH_SF01 is not set. Run the tests with ./scripts/test.sh, or set it to the \
             folder printed by `scripts/tpch-data 0.1`."
        )
    })
}

fn test_file(name: &str) -> String {
    let path = format!("{}/tests/data/tpch/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `CREATE EXTERNAL TABLE` statements of the suite, turned into Apiary frames: same columns
/// and types, without the `_rev` padding column and the (unenforced) primary keys.
fn frame_ddl() -> Vec<String> {
    test_file("create_tables.slt.part")
        .split("statement ok")
        .filter(|s| s.contains("CREATE EXTERNAL TABLE"))
        .map(|s| {
            let ddl = s[s.find("CREATE").unwrap_or(0)..].trim();
            let columns = &ddl[..ddl.find("STORED AS").unwrap_or(ddl.len())];
            let columns = columns.trim_end().trim_end_matches(')');
            let kept: Vec<&str> = columns
                .lines()
                .filter(|l| !l.contains("_rev") && !l.trim_start().starts_with("PRIMARY KEY"))
                .collect();
            let head = kept.join("\n").replace(" PRIMARY KEY", "");
            format!(
                "{}\n) STORED AS APIARY LOCATION ''",
                head.trim_end().trim_end_matches(',')
            )
        })
        .collect()
}

/// A query file: the SQL and the expected rows.
fn parse(file: &str) -> (String, Vec<String>) {
    let body = &file[file.find("\nquery ").expect("a query") + 1..];
    let body = &body[body.find('\n').unwrap_or(0) + 1..];
    let (query, expected) = body.split_once("\n----\n").expect("an expected answer");
    let expected = expected
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (query.trim().trim_end_matches(';').to_string(), expected)
}

/// One value as DataFusion's sqllogictest runner prints it.
fn slt_value(column: &ArrayRef, row: usize) -> String {
    if column.is_null(row) {
        return "NULL".into();
    }
    let text = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())
        .expect("formatter")
        .value(row)
        .to_string();
    let trim_fraction = |t: &str| -> String {
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t.to_string()
        }
    };
    match column.data_type() {
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let v: f64 = text.parse().expect("a float");
            let rounded = trim_fraction(&format!("{v:.12}"));
            if rounded == "-0" { "0".into() } else { rounded }
        }
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => trim_fraction(&text),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if text.is_empty() => {
            "(empty)".into()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            text.trim_end_matches('\n').to_string()
        }
        _ => text,
    }
}

fn slt_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = vec![];
    for b in batches {
        for r in 0..b.num_rows() {
            let values: Vec<String> = b.columns().iter().map(|c| slt_value(c, r)).collect();
            out.push(
                values
                    .join(" ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    out
}

/// Creates the eight TPC-H frames in `tpch.sf01` (the session's default schema afterwards) and
/// loads them from the SF 0.1 Parquet files.
pub async fn load(ctx: &SessionContext) {
    let data = data_dir();
    sql(ctx, "CREATE DATABASE tpch").await;
    sql(ctx, "CREATE SCHEMA tpch.sf01").await;
    sql(ctx, "SET datafusion.catalog.default_catalog = 'tpch'").await;
    sql(ctx, "SET datafusion.catalog.default_schema = 'sf01'").await;
    let ddl = frame_ddl();
    assert_eq!(ddl.len(), 8);
    for d in &ddl {
        sql(ctx, d).await;
    }
    for t in TABLES {
        sql(
            ctx,
            &format!("CREATE EXTERNAL TABLE datafusion.public.src_{t} STORED AS PARQUET LOCATION '{data}/{t}.parquet'"),
        )
        .await;
        sql(
            ctx,
            &format!("INSERT INTO {t} SELECT * FROM datafusion.public.src_{t}"),
        )
        .await;
    }
    let lineitems = crate::support::scalar(ctx, "SELECT count(*) FROM lineitem").await;
    assert_eq!(lineitems, "600572");
}

/// Uses the TPC-H frames loaded by [`load`] (in the same meadow) from another session.
pub async fn use_schema(ctx: &SessionContext) {
    sql(ctx, "SET datafusion.catalog.default_catalog = 'tpch'").await;
    sql(ctx, "SET datafusion.catalog.default_schema = 'sf01'").await;
}

/// The SQL of query `q`.
pub fn query(q: usize) -> String {
    parse(&test_file(&format!("q{q}.slt.part"))).0
}

/// Runs the given queries; the ones whose answer differs from the expected one, described.
pub async fn failures(
    ctx: &SessionContext,
    queries: impl IntoIterator<Item = usize>,
) -> Vec<String> {
    let mut failures = vec![];
    for q in queries {
        let (query, expected) = parse(&test_file(&format!("q{q}.slt.part")));
        assert!(!expected.is_empty(), "q{q} has an expected answer");
        let got = slt_rows(&sql(ctx, &query).await);
        if got != expected {
            failures.push(format!(
                "q{q}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    failures
}

/// Runs the given queries, asserting that every answer is the expected one (the message led by
/// `context`).
pub async fn assert_answers(
    ctx: &SessionContext,
    queries: impl IntoIterator<Item = usize>,
    context: &str,
) {
    let failures = failures(ctx, queries).await;
    assert!(failures.is_empty(), "{context}{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_22_queries_give_the_expected_sf01_answers() {
    let (_dir, _ap, ctx) = folder_session().await;
    load(&ctx).await;
    assert_answers(&ctx, 1..=22, "").await;
}
