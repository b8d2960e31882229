//! SQL behaviour as sqllogictest files (`tests/slt/*.slt`), the format of DataFusion's own SQL
//! tests, run by the `sqllogictest` crate's async runner through Apiary's door (`Apiary::sql`, so
//! `USE`, `SHOW HIVES` and `ALTER TABLE` work as in the shell) on a session of the node's bees.
//!
//! Every file runs on a fresh meadow of each backend, as its own test case
//! (`slt::<file>::{local, memory, s3}`): a failure on S3 never hides the local result, and one
//! backend can be run alone. Values print as DataFusion prints them, NULL as `NULL` and an empty
//! string as `(empty)`.

use apiary::Apiary;
use apiary_catalog::testing::Backend;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

/// One meadow, one session.
struct ApiaryDb {
    ap: Apiary,
    ctx: SessionContext,
}

#[async_trait::async_trait]
impl AsyncDB for ApiaryDb {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let df = self
            .ap
            .sql(&self.ctx, sql)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let schema = std::sync::Arc::clone(df.schema().inner());
        let batches = df.collect().await?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema.fields().iter().map(|f| column_type(f.data_type()));
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = vec![];
        for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()?;
            for r in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| match f.value(r).to_string() {
                            s if s.is_empty() => "(empty)".to_string(),
                            s => s,
                        })
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows {
            types: types.collect(),
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "apiary"
    }
}

/// `I` integers, `R` floating point and decimals, `T` the rest (sqllogictest's letters).
fn column_type(t: &DataType) -> DefaultColumnType {
    if t.is_integer() {
        DefaultColumnType::Integer
    } else if t.is_floating() || t.is_decimal() {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

/// Runs `tests/slt/{file}.slt` on a fresh meadow of backend `chosen`.
async fn run(file: &str, chosen: Backend) {
    let url = chosen.url.clone();
    let ap = crate::support::open(&url).await;
    let mut runner = sqllogictest::Runner::new(move || {
        let ap = ap.clone();
        async move {
            let ctx = ap
                .session()
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(ApiaryDb { ap, ctx })
        }
    });
    runner.with_column_validator(sqllogictest::strict_column_validator);
    let path = format!("{}/tests/slt/{file}.slt", env!("CARGO_MANIFEST_DIR"));
    if let Err(e) = runner.run_file_async(&path).await {
        panic!("{path} on {chosen}:\n{}", e.display(false));
    }
    drop(chosen);
}

/// One test module per file, one test case per backend ([`apiary_catalog::each_backend!`]).
macro_rules! slt {
    ($($file:ident),* $(,)?) => {
        $(
            async fn $file(b: Backend) {
                run(stringify!($file), b).await;
            }
        )*
        apiary_catalog::each_backend!($($file),*);
    };
}

slt!(
    ddl,
    insert,
    overwrite,
    doors,
    errors,
    time_travel,
    row_changes,
    alter,
    merge
);
