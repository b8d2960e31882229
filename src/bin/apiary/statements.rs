//! Apiary's statements in the shell, before datafusion-cli sees them.
//!
//! datafusion-cli 55 parses and plans every statement itself and has no hook for statements its
//! planner lacks, and it parses a `CREATE EXTERNAL TABLE`'s `LOCATION` as a URL (so `LOCATION ''`
//! of an Apiary frame fails there). The shell therefore splits what it is given into statements
//! — `-c`, `-f` and the REPL alike — and runs Apiary's own (`USE`, `SHOW HIVES`, …, and
//! `CREATE EXTERNAL TABLE … STORED AS APIARY`) through `Apiary::sql`; everything else goes to
//! datafusion-cli as before.

use std::io::BufRead;
use std::sync::Arc;

use datafusion::common::instant::Instant;
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion_cli::command::{Command, OutputFormat};
use datafusion_cli::exec::exec_from_commands;
use datafusion_cli::helper::CliHelper;
use datafusion_cli::print_options::PrintOptions;
use rustyline::Editor;
use rustyline::error::ReadlineError;

use super::shell::ApiaryShell;

/// Whether `sql` (one statement) is run by Apiary rather than by datafusion-cli.
fn is_apiarys(sql: &str) -> bool {
    if apiary::catalog::own_statement(sql).is_some() {
        return true;
    }
    let upper = sql.to_ascii_uppercase();
    if !(upper.contains("CREATE") && upper.contains("EXTERNAL") && upper.contains("APIARY")) {
        return false;
    }
    let Ok(statements) = DFParser::parse_sql(sql) else {
        return false;
    };
    statements.len() == 1
        && matches!(
            statements.front(),
            Some(Statement::CreateExternalTable(c)) if c.file_type.eq_ignore_ascii_case("APIARY")
        )
}

/// Runs one statement, printing its result as datafusion-cli would.
async fn run(shell: &ApiaryShell, print: &PrintOptions, sql: String) -> Result<()> {
    if !is_apiarys(&sql) {
        // `SET apiary.schema_mode = 'merge'`: the frame evolves before datafusion-cli plans it.
        shell
            .ap
            .providers()
            .merge_schema_for_insert(&shell.ctx, &sql)
            .await?;
        // The status page shows the statement beside its query.
        shell
            .ap
            .bees()
            .queries()
            .note_sql(shell.ctx.session_id().as_str(), &sql);
        return exec_from_commands(shell, vec![sql], print).await;
    }
    let start = Instant::now();
    let df = shell
        .ap
        .sql(&shell.ctx, &sql)
        .await
        .map_err(DataFusionError::from)?;
    let schema = Arc::clone(df.schema().inner());
    let batches = df.collect().await?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let format = shell.ctx.state().config_options().format.clone();
    print.print_batches(schema, &batches, start, rows, &format)
}

/// The statements of `text`, split at semicolons outside quotes and comments.
pub fn split(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut current = String::new();
    let (mut single, mut double, mut line_comment, mut block_comment) =
        (false, false, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        match c {
            '\n' if line_comment => line_comment = false,
            _ if line_comment => {}
            '*' if block_comment && chars.peek() == Some(&'/') => {
                current.push('/');
                chars.next();
                block_comment = false;
            }
            _ if block_comment => {}
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '-' if !single && !double && chars.peek() == Some(&'-') => line_comment = true,
            '/' if !single && !double && chars.peek() == Some(&'*') => block_comment = true,
            ';' if !single && !double => {
                push(&mut out, &current);
                current.clear();
            }
            _ => {}
        }
    }
    push(&mut out, &current);
    out
}

/// Adds `statement` unless it holds nothing but blanks and comments.
fn push(out: &mut Vec<String>, statement: &str) {
    let has_code = statement.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with("--") && l != ";"
    });
    if has_code {
        out.push(statement.trim().to_string());
    }
}

/// `-c`: each command's statements in turn; the first error stops (a non-zero exit).
pub async fn exec_commands(
    shell: &ApiaryShell,
    commands: Vec<String>,
    print: &PrintOptions,
) -> Result<()> {
    for command in commands {
        for statement in split(&command) {
            run(shell, print, statement).await?;
        }
    }
    Ok(())
}

/// `-f` (and the rc files): as datafusion-cli reads them — `#!` lines skipped, errors printed
/// and the next statement run.
pub async fn exec_files(
    shell: &ApiaryShell,
    files: Vec<String>,
    print: &PrintOptions,
) -> Result<()> {
    for file in files {
        let f = std::fs::File::open(&file)
            .map_err(|e| DataFusionError::Execution(format!("cannot read {file}: {e}")))?;
        let mut text = String::new();
        for line in std::io::BufReader::new(f).lines() {
            let line =
                line.map_err(|e| DataFusionError::Execution(format!("reading {file}: {e}")))?;
            if !line.starts_with("#!") {
                text.push_str(&line);
                text.push('\n');
            }
        }
        for statement in split(&text) {
            if let Err(e) = run(shell, print, statement).await {
                eprintln!("{e}");
            }
        }
    }
    Ok(())
}

/// The REPL: datafusion-cli's (its line editor, hints, history and backslash commands), with
/// each statement routed as above.
pub async fn exec_repl(shell: &ApiaryShell, print: &mut PrintOptions) -> rustyline::Result<()> {
    let dialect = |s: &ApiaryShell| s.ctx.state().config_options().sql_parser.dialect;
    let mut rl = Editor::new()?;
    rl.set_helper(Some(CliHelper::new(&dialect(shell), print.color)));
    rl.load_history(".history").ok();
    loop {
        match rl.readline("> ") {
            Ok(line) if line.starts_with('\\') => {
                rl.add_history_entry(line.trim_end())?;
                let command = line.split_whitespace().collect::<Vec<_>>().join(" ");
                match command[1..].parse::<Command>() {
                    Ok(Command::Quit) => break,
                    Ok(Command::OutputFormat(Some(format))) => {
                        match format.parse::<OutputFormat>() {
                            Ok(f) => {
                                if let Err(e) = f.execute(print) {
                                    eprintln!("{e}")
                                }
                            }
                            Err(_) => eprintln!("'\\{}' is not a valid command", &line[1..]),
                        }
                    }
                    Ok(Command::OutputFormat(None)) => {
                        println!("Output format is {:?}.", print.format)
                    }
                    Ok(cmd) => {
                        if let Err(e) = cmd.execute(shell, print).await {
                            eprintln!("{e}")
                        }
                    }
                    Err(_) => eprintln!(
                        "'\\{}' is not a valid command, you can use '\\?' to see all commands",
                        &line[1..]
                    ),
                }
            }
            Ok(line) => {
                for statement in split(&line) {
                    rl.add_history_entry(statement.trim_end())?;
                    tokio::select! {
                        res = run(shell, print, statement) => if let Err(e) = res {
                            eprintln!("{e}")
                        },
                        _ = tokio::signal::ctrl_c() => println!("^C"),
                    }
                    if let Some(helper) = rl.helper_mut() {
                        helper.set_dialect(&dialect(shell));
                    }
                }
            }
            Err(ReadlineError::Interrupted) => {
                println!("^C");
                if let Some(helper) = rl.helper() {
                    helper.reset_hint();
                }
            }
            Err(ReadlineError::Eof) => {
                println!("\\q");
                break;
            }
            Err(err) => {
                eprintln!("Unknown error happened {err:?}");
                break;
            }
        }
    }
    rl.save_history(".history")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(
            split("SELECT 'a;b'; -- c; d\nUSE \"x;y\";\n/* ; */ SHOW HIVES"),
            [
                "SELECT 'a;b';",
                "-- c; d\nUSE \"x;y\";",
                "/* ; */ SHOW HIVES"
            ]
        );
        assert!(split("  ;\n-- only a comment\n").is_empty());
    }

    #[test]
    fn apiarys_statements_are_recognised() {
        assert!(is_apiarys("USE sales.eu;"));
        assert!(is_apiarys(
            "CREATE EXTERNAL TABLE h.b.f (id INT) STORED AS APIARY LOCATION ''"
        ));
        assert!(!is_apiarys(
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'x.parquet'"
        ));
        assert!(!is_apiarys("SELECT 'USE x'"));
    }
}
