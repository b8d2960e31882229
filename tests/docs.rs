//! The SQL examples of `docs/sql.md` run, in order, on a fresh Apiary, and print what the page
//! says they print.

use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::support::open;

/// The page's code blocks: `sql` blocks to run and, right after one, an optional `text` block
/// with the table its last statement prints.
fn blocks(page: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = vec![];
    let mut rest = page;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let lang_end = after.find('\n').unwrap_or(after.len());
        let lang = after[..lang_end].trim();
        let body_start = lang_end + 1;
        let end = after[body_start..]
            .find("```")
            .expect("a closed code block")
            + body_start;
        let body = after[body_start..end].to_string();
        match lang {
            "sql" => out.push((body, None)),
            "text" if body.trim_start().starts_with('+') => {
                if let Some(last) = out.last_mut() {
                    last.1 = Some(body);
                }
            }
            _ => {}
        }
        rest = &after[end + 3..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_of_the_sql_page_runs_and_prints_what_it_says() {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/sql.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ap = open(dir.path().to_str().unwrap()).await;
    let ctx = ap.session().unwrap();
    let examples = blocks(&page);
    assert!(examples.len() >= 10, "the page has its examples");
    for (body, expected) in examples {
        let statements: Vec<&str> = body
            .split(";\n")
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.lines().all(|l| l.trim_start().starts_with("--")))
            .collect();
        let mut last = vec![];
        // Through Apiary's door (`Apiary::sql`), which also takes `USE` and `SHOW HIVES`.
        for s in statements {
            let df = ap
                .sql(&ctx, s.trim_end_matches(';'))
                .await
                .unwrap_or_else(|e| panic!("planning {s}: {e}"));
            last = df
                .collect()
                .await
                .unwrap_or_else(|e| panic!("executing {s}: {e}"));
        }
        if let Some(expected) = expected {
            let got = pretty_format_batches(&last).unwrap().to_string();
            assert_eq!(got.trim(), expected.trim(), "output of:\n{body}");
        }
    }
}

/// `docs/observability.md` lists every metric Apiary records, and none that it does not.
#[test]
fn the_observability_page_lists_every_metric() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/observability.md"
    ))
    .unwrap();
    let listed: std::collections::BTreeSet<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.starts_with("apiary_"))
        .collect();
    let recorded: std::collections::BTreeSet<&str> = apiary_catalog::sight::METRICS
        .iter()
        .map(|(name, _, _)| *name)
        .collect();
    assert_eq!(listed, recorded);
}
