//! Statements DataFusion's SQL planner lacks, for Apiary's own doors (`Apiary::sql`, the
//! `apiary` command, the Python `Apiary.sql`): `USE hive[.box]`, `SHOW DATABASES` / `SHOW HIVES`,
//! `SHOW SCHEMAS [IN hive]` / `SHOW BOXES [IN hive]`; and `CREATE DATABASE`, which DataFusion
//! runs through `register_catalog` (a call that cannot fail), made to fail at once with its
//! reason.
//!
//! The doors recognise the statement text before DataFusion parses it ([`own_statement`]); a
//! plain `SessionContext::sql` answers these as DataFusion does ("Unsupported SQL statement").

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::TableReference;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnOption, Expr, Ident, Statement as SqlStatement,
};

use super::ProviderState;
use crate::error::{CatalogError, Kind};
use crate::registry::IfExists;

/// One of Apiary's own statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnStatement {
    /// `USE hive` / `USE hive.box`: the session's default catalog (and schema); the session's
    /// own catalogs too (`USE datafusion.public`).
    Use {
        /// The catalog (a hive, or one of the session's own).
        hive: String,
        /// The schema, when given.
        box_: Option<String>,
    },
    /// `SHOW DATABASES`: every catalog of the session, hives and the session's own.
    ShowDatabases,
    /// `SHOW HIVES`: the meadow's hives.
    ShowHives,
    /// `SHOW SCHEMAS [IN c]` (`boxes`: `SHOW BOXES [IN hive]`); the default catalog without `IN`.
    ShowSchemas {
        /// The catalog after `IN` (or `FROM`).
        catalog: Option<String>,
        /// Asked as `SHOW BOXES`.
        boxes: bool,
    },
    /// `ALTER TABLE frame …`: one `set_schema` (or, for `CLUSTER BY`, `set_properties`) commit.
    AlterTable {
        /// The frame, as written.
        frame: TableReference,
        /// Its operations, in order.
        changes: Vec<SchemaChange>,
    },
}

/// One operation of an `ALTER TABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaChange {
    /// `ADD COLUMN [IF NOT EXISTS] name type`; `sql_type` as written.
    AddColumn {
        /// The new column.
        name: String,
        /// Its type, as written.
        sql_type: String,
        /// `NOT NULL` was given (refused: rows already written have no value).
        not_null: bool,
        /// `IF NOT EXISTS` was given.
        if_not_exists: bool,
    },
    /// `ALTER COLUMN name [SET DATA] TYPE type`.
    SetType {
        /// The column.
        name: String,
        /// Its new type, as written.
        sql_type: String,
    },
    /// `RENAME COLUMN from TO to`.
    Rename {
        /// The column's name.
        from: String,
        /// Its new name.
        to: String,
    },
    /// `CLUSTER BY (c1, …)`: the frame's sort order, ascending (`DROP CLUSTERING KEY`: none).
    /// A `set_properties` commit of its own; `None` when an item is not a column name.
    ClusterBy {
        /// The key columns (empty: no sort order).
        columns: Option<Vec<String>>,
    },
    /// Anything else, as written (refused, naming it).
    Other(String),
}

/// Recognises one statement's text (leading `--` comment lines and a trailing `;` allowed).
pub fn own_statement(sql: &str) -> Option<OwnStatement> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ");
    let text = text.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    match upper.as_slice() {
        ["USE", _] => {
            let name = TableReference::parse_str(words[1]);
            match name {
                TableReference::Bare { table } => Some(OwnStatement::Use {
                    hive: table.to_string(),
                    box_: None,
                }),
                TableReference::Partial { schema, table } => Some(OwnStatement::Use {
                    hive: schema.to_string(),
                    box_: Some(table.to_string()),
                }),
                TableReference::Full { .. } => None,
            }
        }
        ["ALTER", "TABLE", ..] => alter_table(text),
        ["SHOW", "DATABASES"] => Some(OwnStatement::ShowDatabases),
        ["SHOW", "HIVES"] => Some(OwnStatement::ShowHives),
        ["SHOW", what @ ("SCHEMAS" | "BOXES"), rest @ ..] => {
            let catalog = match rest {
                [] => None,
                ["IN" | "FROM", _] => Some(TableReference::parse_str(words[3]).table().to_string()),
                _ => return None,
            };
            Some(OwnStatement::ShowSchemas {
                catalog,
                boxes: *what == "BOXES",
            })
        }
        _ => None,
    }
}

/// An identifier as DataFusion folds it: lower case unless quoted.
pub(crate) fn ident(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_ascii_lowercase(),
    }
}

fn alter_table(text: &str) -> Option<OwnStatement> {
    let mut statements = DFParser::parse_sql(text).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let Some(Statement::Statement(statement)) = statements.pop_front() else {
        return None;
    };
    let SqlStatement::AlterTable(alter) = *statement else {
        return None;
    };
    let frame = TableReference::parse_str(&alter.name.to_string());
    let changes = alter
        .operations
        .iter()
        .map(|op| match op {
            AlterTableOperation::AddColumn {
                if_not_exists,
                column_def,
                ..
            } => SchemaChange::AddColumn {
                name: ident(&column_def.name),
                sql_type: column_def.data_type.to_string(),
                not_null: column_def
                    .options
                    .iter()
                    .any(|o| matches!(o.option, ColumnOption::NotNull)),
                if_not_exists: *if_not_exists,
            },
            AlterTableOperation::AlterColumn {
                column_name,
                op:
                    AlterColumnOperation::SetDataType {
                        data_type,
                        using: None,
                        ..
                    },
            } => SchemaChange::SetType {
                name: ident(column_name),
                sql_type: data_type.to_string(),
            },
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => SchemaChange::Rename {
                from: ident(old_column_name),
                to: ident(new_column_name),
            },
            AlterTableOperation::ClusterBy { exprs } => SchemaChange::ClusterBy {
                columns: exprs
                    .iter()
                    .map(|e| match e {
                        Expr::Identifier(i) => Some(ident(i)),
                        _ => None,
                    })
                    .collect(),
            },
            AlterTableOperation::DropClusteringKey => SchemaChange::ClusterBy {
                columns: Some(vec![]),
            },
            other => SchemaChange::Other(other.to_string()),
        })
        .collect();
    Some(OwnStatement::AlterTable { frame, changes })
}

impl ProviderState {
    /// Runs `statement` in `ctx`.
    pub async fn execute_own(
        &self,
        ctx: &SessionContext,
        statement: &OwnStatement,
    ) -> Result<DataFrame> {
        match statement {
            OwnStatement::Use { hive, box_ } => {
                // A hive, or one of the session's own catalogs (`USE datafusion.public`).
                self.refresh().await?;
                let catalog = ctx
                    .catalog(hive)
                    .ok_or_else(|| CatalogError::not_found(Kind::Hive, hive))?;
                if let Some(b) = box_
                    && catalog.schema(b).is_none()
                {
                    return Err(CatalogError::not_found(Kind::Box, format!("{hive}.{b}")).into());
                }
                let session = ctx.state_ref();
                let mut session = session.write();
                let options = &mut session.config_mut().options_mut().catalog;
                options.default_catalog = hive.clone();
                if let Some(b) = box_ {
                    options.default_schema = b.clone();
                }
                drop(session);
                nothing(ctx)
            }
            OwnStatement::ShowDatabases => {
                let mut names = ctx.catalog_names();
                names.sort();
                names.dedup();
                list(ctx, "database", names)
            }
            OwnStatement::ShowHives => {
                let mut names = self.refresh().await?.hive_names();
                names.sort();
                list(ctx, "hive", names)
            }
            OwnStatement::AlterTable { frame, changes } => {
                self.alter_table(ctx, frame, changes).await?;
                nothing(ctx)
            }
            OwnStatement::ShowSchemas { catalog, boxes } => {
                let name = match catalog {
                    Some(c) => c.clone(),
                    None => ctx.state().config_options().catalog.default_catalog.clone(),
                };
                self.refresh().await?;
                let catalog = ctx
                    .catalog(&name)
                    .ok_or_else(|| CatalogError::not_found(Kind::Hive, &name))?;
                let mut names = catalog.schema_names();
                names.sort();
                list(ctx, if *boxes { "box" } else { "schema" }, names)
            }
        }
    }

    /// Runs `plan` if it is a `CREATE DATABASE` of a hive, failing at once with the reason;
    /// `None` when it is not (the caller hands it to DataFusion).
    pub async fn execute_create_database(
        &self,
        ctx: &SessionContext,
        plan: &LogicalPlan,
    ) -> Result<Option<DataFrame>> {
        let LogicalPlan::Ddl(DdlStatement::CreateCatalog(cmd)) = plan else {
            return Ok(None);
        };
        let name = &cmd.catalog_name;
        // A name the session already has: DataFusion's own answer (an error, or nothing for
        // IF NOT EXISTS).
        if ctx.catalog(name).is_some() {
            return Ok(None);
        }
        self.registry().create_hive(name, IfExists::Fail).await?;
        self.forget_failed_hive(name);
        self.refresh().await?;
        Ok(Some(nothing(ctx)?))
    }
}

/// What a statement without rows returns.
fn nothing(ctx: &SessionContext) -> Result<DataFrame> {
    Ok(DataFrame::new(
        ctx.state(),
        LogicalPlanBuilder::empty(false).build()?,
    ))
}

/// One column of names.
fn list(ctx: &SessionContext, column: &str, names: Vec<String>) -> Result<DataFrame> {
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(names))])?;
    ctx.read_batch(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_own_statements_and_nothing_else() {
        let use_ = |h: &str, b: Option<&str>| OwnStatement::Use {
            hive: h.into(),
            box_: b.map(Into::into),
        };
        assert_eq!(own_statement("USE sales"), Some(use_("sales", None)));
        assert_eq!(
            own_statement("-- pick\n use Sales.EU ;"),
            Some(use_("sales", Some("eu")))
        );
        assert_eq!(
            own_statement("USE \"Odd Hive\""),
            None,
            "a quoted name with a space is two words"
        );
        assert_eq!(own_statement("use \"Odd\""), Some(use_("Odd", None)));
        assert_eq!(own_statement("show hives"), Some(OwnStatement::ShowHives));
        assert_eq!(
            own_statement("SHOW BOXES IN sales"),
            Some(OwnStatement::ShowSchemas {
                catalog: Some("sales".into()),
                boxes: true
            })
        );
        for other in [
            "SHOW TABLES",
            "SELECT 1",
            "USE a.b.c",
            "SHOW SCHEMAS LIKE 'x'",
            "useless",
        ] {
            assert_eq!(own_statement(other), None, "{other}");
        }
    }
}
