//! The `apiary` command as users run it: a separate process, its stdout, stderr and exit code.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{apiary, csv, csv_out, failed, ok};

fn setup(storage: &Path) {
    ok(&apiary(
        storage,
        &[
            "-q",
            "-c",
            "CREATE DATABASE sales",
            "CREATE SCHEMA sales.eu",
            "CREATE TABLE sales.eu.orders (id BIGINT NOT NULL, region VARCHAR NOT NULL, amount DOUBLE)",
            "INSERT INTO sales.eu.orders VALUES (1, 'fr', 9.5), (2, 'de', 3.0)",
        ],
    ));
}

#[test]
fn dash_c_prints_csv_and_a_failing_statement_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let out = ok(&apiary(
        dir.path(),
        &[
            "--format",
            "csv",
            "-c",
            "SELECT id, region FROM sales.eu.orders ORDER BY id",
        ],
    ));
    assert!(out.starts_with("id,region\n1,fr\n2,de\n"), "{out}");

    let err = failed(&apiary(
        dir.path(),
        &["-c", "SELECT * FROM sales.eu.missing"],
    ));
    assert!(err.contains("sales.eu.missing"), "{err}");

    // APIARY_STORAGE instead of --storage; nd-json output.
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args([
            "-q",
            "--format",
            "nd-json",
            "-c",
            "SELECT sum(amount) AS total FROM sales.eu.orders",
        ])
        .env("APIARY_STORAGE", dir.path())
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), r#"{"total":12.5}"#);

    // -f runs a file of statements.
    let file = dir.path().join("q.sql");
    std::fs::write(&file, "SELECT count(*) AS n FROM sales.eu.orders;\n").unwrap();
    let out = csv_out(dir.path(), &["-f", file.to_str().unwrap()]);
    assert_eq!(out.lines().take(2).collect::<Vec<_>>(), ["n", "2"]);

    let err = failed(&apiary(dir.path(), &["-m", "lots", "-c", "SELECT 1"]));
    assert!(err.contains("lots"), "{err}");

    // datafusion-cli's other memory flags, mapped onto the bees.
    let memory = ["-m", "256M", "--mem-pool-type", "greedy", "-d", "1G"];
    let count = ["-c", "SELECT count(*) AS n FROM sales.eu.orders"];
    let out = csv_out(dir.path(), &[&memory[..], &count].concat());
    assert_eq!(out.lines().take(2).collect::<Vec<_>>(), ["n", "2"]);
    let err = failed(&apiary(dir.path(), &["-d", "plenty", "-c", "SELECT 1"]));
    assert!(err.contains("--disk-limit \"plenty\""), "{err}");
    let err = failed(&apiary(
        dir.path(),
        &["--mem-pool-type", "lazy", "-c", "SELECT 1"],
    ));
    assert!(err.contains("lazy"), "{err}");
}

/// The shell recognises Apiary's statements before datafusion-cli sees them: `CREATE EXTERNAL
/// TABLE … STORED AS APIARY … LOCATION ''` (which datafusion-cli would parse as a URL), `USE`,
/// `SHOW HIVES` / `BOXES`, and `CREATE DATABASE` failing at once — in `-c`, `-f` and the REPL.
#[test]
fn the_shell_takes_apiarys_statements_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    ok(&apiary(
        dir.path(),
        &[
            "-q",
            "-c",
            "CREATE EXTERNAL TABLE sales.eu.parts (id BIGINT NOT NULL, k VARCHAR NOT NULL) STORED AS APIARY PARTITIONED BY (k) LOCATION ''",
            "INSERT INTO sales.eu.parts VALUES (1, 'a'), (2, 'b')",
        ],
    ));
    assert_eq!(
        csv(
            dir.path(),
            "SELECT count(*) AS n FROM apiary_cells('sales.eu.parts')"
        ),
        ["n", "2"]
    );
    // Row-level changes through the shell.
    let out = csv_out(
        dir.path(),
        &[
            "-c",
            "DELETE FROM sales.eu.parts WHERE id = 1",
            "MERGE INTO sales.eu.parts AS p USING (SELECT 2 AS id) AS s ON p.id = s.id WHEN MATCHED THEN UPDATE SET k = 'z' WHEN NOT MATCHED THEN INSERT (id, k) VALUES (s.id, 'n')",
            "SELECT id, k FROM sales.eu.parts",
            "UPDATE sales.eu.orders SET amount = 1.0 WHERE id = 1",
            "CREATE TABLE sales.eu.scratch AS VALUES (1), (2), (3)",
            "TRUNCATE TABLE sales.eu.scratch",
            "DROP TABLE sales.eu.scratch",
        ],
    );
    assert!(
        out.contains("count\n1\n") && out.contains("id,k\n2,z\n"),
        "{out}"
    );
    assert!(out.contains("count\n3\n"), "{out}");
    // -c
    let out = csv_out(
        dir.path(),
        &[
            "-c",
            "USE sales.eu",
            "SELECT count(*) AS n FROM orders",
            "SHOW HIVES",
            "ALTER TABLE sales.eu.orders ADD COLUMN note VARCHAR",
            "SELECT count(*) AS nulls FROM sales.eu.orders WHERE note IS NULL",
            "ALTER TABLE sales.eu.orders RENAME COLUMN note TO remark",
            "SET apiary.schema_mode = 'merge'",
            "INSERT INTO sales.eu.orders (id, region, amount, remark, channel) VALUES (3, 'fr', 1.0, 'r', 'web')",
            "SELECT count(remark) AS remarks, count(channel) AS channels FROM sales.eu.orders",
        ],
    );
    assert!(out.contains("n\n2\n"), "{out}");
    assert!(out.contains("hive\nsales\n"), "{out}");
    assert!(out.contains("nulls\n2\n"), "{out}");
    assert!(out.contains("remarks,channels\n1,1\n"), "{out}");
    let err = failed(&apiary(
        dir.path(),
        &["-q", "-c", "CREATE DATABASE \"bad-hive\""],
    ));
    assert!(err.contains("invalid hive name \"bad-hive\""), "{err}");
    // -f
    let file = dir.path().join("q.sql");
    std::fs::write(
        &file,
        "USE sales.eu;\nSHOW BOXES;\n-- a comment\nSELECT count(*) AS n\nFROM parts;\n",
    )
    .unwrap();
    let out = csv_out(dir.path(), &["-f", file.to_str().unwrap()]);
    assert!(out.contains("box\neu\n"), "{out}");
    assert!(out.contains("n\n1\n"), "{out}"); // parts, after the DELETE above
    // The REPL, fed on stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args([
            "--storage",
            dir.path().to_str().unwrap(),
            "-q",
            "--format",
            "csv",
        ])
        .current_dir(dir.path()) // the REPL keeps its history in ./.history
        .env_remove("APIARY_STORAGE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"USE sales.eu;\nSELECT count(*) AS n FROM orders;\nUSE nope;\n\\q\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("n\n3\n"), "{stdout}"); // orders, after the INSERT above
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hive nope not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn import_streams_files_into_a_frame_in_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("meadow");
    setup(&storage);
    let files = dir.path();
    let mut rows = String::from("id,region,amount\n");
    for i in 0..5000 {
        rows.push_str(&format!(
            "{},{},{}.5\n",
            100 + i,
            ["fr", "de", "it"][i % 3],
            i
        ));
    }
    std::fs::write(files.join("more.csv"), rows).unwrap();
    std::fs::write(
        files.join("more.json"),
        "{\"id\": 9001, \"region\": \"es\", \"amount\": 1.0}\n{\"id\": 9002, \"region\": \"pt\", \"amount\": 2.0}\n",
    )
    .unwrap();
    let csv_file = files.join("more.csv");
    let json_file = files.join("more.json");

    // Into an existing frame: one commit for the whole file.
    let out = ok(&apiary(
        &storage,
        &["import", "sales.eu.orders", csv_file.to_str().unwrap()],
    ));
    assert!(out.contains("5000 rows"), "{out}");
    assert_eq!(
        csv(
            &storage,
            "SELECT count(*) AS n, sum(id) AS s FROM sales.eu.orders"
        ),
        ["n,s", &format!("5002,{}", 3 + (100..5100).sum::<i64>())]
    );
    assert_eq!(
        csv(
            &storage,
            "SELECT count(*) AS n FROM apiary_history('sales.eu.orders') WHERE action = 'add_cells'"
        )[1],
        "2",
        "the INSERT of setup and one commit for the import"
    );

    // A new frame, partitioned, from NDJSON; then Parquet written by the shell itself.
    ok(&apiary(
        &storage,
        &[
            "import",
            "sales.south.orders",
            json_file.to_str().unwrap(),
            "--create",
            "--partition-by",
            "region",
            "-q",
        ],
    ));
    let parquet = files.join("eu.parquet");
    ok(&apiary(
        &storage,
        &[
            "-q",
            "-c",
            &format!(
                "COPY (SELECT * FROM sales.eu.orders WHERE region = 'fr') TO '{}' STORED AS PARQUET",
                parquet.display()
            ),
        ],
    ));
    ok(&apiary(
        &storage,
        &[
            "import",
            "sales.south.orders",
            parquet.to_str().unwrap(),
            "-q",
        ],
    ));
    assert_eq!(
        csv(
            &storage,
            "SELECT region, count(*) AS n FROM sales.south.orders GROUP BY region ORDER BY region"
        ),
        ["region,n", "es,1", "fr,1668", "pt,1"]
    );

    // Bad input: each names the culprit and commits nothing.
    let err = failed(&apiary(
        &storage,
        &["import", "sales.eu.nope", csv_file.to_str().unwrap()],
    ));
    assert!(
        err.contains("sales.eu.nope") && err.contains("--create"),
        "{err}"
    );
    let err = failed(&apiary(
        &storage,
        &["import", "orders", csv_file.to_str().unwrap()],
    ));
    assert!(err.contains("hive.box.frame"), "{err}");
    let missing = files.join("missing.csv");
    let err = failed(&apiary(
        &storage,
        &["import", "sales.eu.orders", missing.to_str().unwrap()],
    ));
    assert!(err.contains("missing.csv"), "{err}");
    std::fs::write(files.join("other.csv"), "id,region,price\n1,fr,2.5\n").unwrap();
    let err = failed(&apiary(
        &storage,
        &[
            "import",
            "sales.eu.orders",
            files.join("other.csv").to_str().unwrap(),
        ],
    ));
    assert!(err.contains("no column price"), "{err}");
    std::fs::write(
        files.join("bad.csv"),
        "id,region,amount\n1,fr,not-a-number\n",
    )
    .unwrap();
    let err = failed(&apiary(
        &storage,
        &[
            "import",
            "sales.eu.orders",
            files.join("bad.csv").to_str().unwrap(),
            "--kind",
            "csv",
        ],
    ));
    assert!(err.contains("sales.eu.orders"), "{err}");
    assert_eq!(
        csv(&storage, "SELECT count(*) AS n FROM sales.eu.orders")[1],
        "5002"
    );
}

#[test]
fn status_shows_the_swarm_and_a_node_leaves_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("meadow");
    setup(&storage);
    let out = ok(&apiary(
        &storage,
        &["status", "--watch-ms", "100", "--bees", "3"],
    ));
    assert!(out.contains("3 bees") && out.contains("no node"), "{out}");

    let mut node = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .arg("--storage")
        .arg(&storage)
        .args(["node", "--node-id", "pi-1", "--bees", "2", "-m", "512M"])
        .args(["--heartbeat-ms", "200", "--cache-size", "0"])
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let heartbeat = storage.join("_heartbeats/node_pi-1.json");
    let start = std::time::Instant::now();
    while !heartbeat.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "no heartbeat");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ok(&apiary(
        &storage,
        &["status", "--format", "json", "--watch-ms", "1000"],
    ));
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let swarm = status["swarm"].as_array().unwrap();
    assert_eq!(swarm.len(), 1, "{out}");
    assert_eq!(swarm[0]["node"], "pi-1");
    assert_eq!(swarm[0]["state"], "alive");
    assert_eq!(swarm[0]["bees"], 2);
    // The line about this machine is the running node's own state, from its heartbeat — not a
    // pool the status process measured.
    let out = ok(&apiary(&storage, &["status", "--watch-ms", "600"]));
    assert!(
        out.contains("node pi-1 alive: 2 bees of 256 MiB, 0 busy"),
        "{out}"
    );

    // A one-bee shell joining the swarm: DataFusion plans its aggregation in one step; the
    // swarm splits it so that the partial step runs with the scan, on either node.
    let out = ok(&apiary(
        &storage,
        &[
            "--swarm",
            "--bees",
            "1",
            "-q",
            "--format",
            "csv",
            "-c",
            "SET datafusion.explain.format = 'indent'",
            "EXPLAIN SELECT region, sum(amount) AS total FROM sales.eu.orders GROUP BY region",
            "SET swarm.min_bytes = 0",
            "EXPLAIN SELECT region, sum(amount) AS total FROM sales.eu.orders GROUP BY region",
            "SELECT region, sum(amount) AS total FROM sales.eu.orders GROUP BY region ORDER BY region",
        ],
    ));
    // A plain EXPLAIN says why a scan stays local, and over how many tasks one is spread (one
    // per bee the two nodes offer: 1 + 2, as the cell is smaller than swarm.min_task_bytes).
    let local = out
        .find("swarm: local, it reads ")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        out[local..].contains("below swarm.min_bytes (64.0 MiB)"),
        "{out}"
    );
    let out = &out[local..];
    assert!(
        out.contains("sales.eu.orders at version 1: 1 cells (")
            && out.contains("; swarm: distributed over 3 tasks, 2 nodes alive"),
        "{out}"
    );
    let final_at = out.find("mode=Final").unwrap_or_else(|| panic!("{out}"));
    let swarm_at = out.find("SwarmExec").unwrap_or_else(|| panic!("{out}"));
    let partial_at = out.find("mode=Partial").unwrap_or_else(|| panic!("{out}"));
    assert!(final_at < swarm_at && swarm_at < partial_at, "{out}");
    assert!(out.contains("region,total\nde,3.0\nfr,9.5\n"), "{out}");

    let killed = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(node.wait().unwrap().success());
    assert!(!heartbeat.exists(), "the heartbeat is removed on SIGTERM");
}

#[test]
fn bee_flags_hold_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("meadow");
    setup(&storage);
    let node_of = |args: &[&str]| -> serde_json::Value {
        let out = ok(&apiary(&storage, args));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["node"].clone()
    };
    let json = ["--format", "json", "--watch-ms", "0"];
    let flags = ["--bees", "3", "-m", "300M"];
    let before = node_of(&[&flags[..], &["status"], &json[..]].concat());
    let after = node_of(&[&["status"], &flags[..], &json[..]].concat());
    for node in [&before, &after] {
        assert_eq!(node["bees"], 3, "{node}");
        assert_eq!(node["budget_per_bee"], 100 * 1024 * 1024, "{node}");
    }

    // `apiary node` says what it joined with; both placements give the same.
    for args in [
        [&flags[..], &["node"]].concat(),
        [&["node"], &flags[..]].concat(),
    ] {
        let mut node = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .arg("--storage")
            .arg(&storage)
            .args(&args)
            .args(["--cache-size", "0", "--heartbeat-ms", "200"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(node.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        Command::new("kill")
            .args(["-TERM", &node.id().to_string()])
            .status()
            .unwrap();
        node.wait().unwrap();
        assert!(line.contains("with 3 bees of 100 MiB"), "{args:?}: {line}");
    }
}

#[test]
fn an_s3_meadow_without_credentials_says_what_is_missing() {
    let url = apiary_catalog::testing::s3_url();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["--storage", &url, "-c", "SELECT 1"])
        .env_remove("APIARY_STORAGE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(
        err.contains(&url)
            && err.contains("no S3 credentials")
            && err.contains("AWS_ACCESS_KEY_ID")
            && err.contains("access_key_id="),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
