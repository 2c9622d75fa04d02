//! Security: tokens, passwords, read-only SQL, TLS, and no unauthenticated or plaintext-token
//! remote serving.

use crate::common::{Scratch, StrataServer, certificates, run_err, run_ok, run_python, strata};
use crate::historical::{example_config, generate};

#[test]
fn wrong_credentials_and_forbidden_sql_are_refused() {
    let scratch = Scratch::new("security");
    let lake = scratch.path("lake");
    let extra = "[[serve.auth.users]]\nusername = \"analyst\"\npassword_env = \"STRATA_TEST_PASSWORD\"\n";
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    // The example's [serve.auth] table is open at the end of the file: add the user there.
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + extra).unwrap();
    let data = scratch.path("events.jsonl");
    generate(&config, &data, 20_000, 3);
    let env = [
        ("STRATA_AUTH_TOKEN", "the-token"),
        ("STRATA_TEST_PASSWORD", "the-password"),
    ];
    run_ok(strata(&config).args(["import", "page_views"]).arg(&data).envs(env));
    run_ok(strata(&config).args(["batch", "run"]).envs(env));

    let mut server = StrataServer::start(&config, &env);
    let endpoint = server.endpoint();
    let out = run_python(
        "security.py",
        &[
            "--endpoint",
            &endpoint,
            "--token",
            "the-token",
            "--user",
            "analyst",
            "--password",
            "the-password",
        ],
    );
    println!("{out}");
    assert!(out.contains("security: all refusals as expected"), "{out}");

    // strata query: no token, a wrong token, a forbidden statement, bad SQL.
    let query = |args: &[&str]| {
        let mut c = strata(&config);
        c.args(["query"])
            .args(args)
            .args(["--endpoint", &endpoint])
            .env_remove("STRATA_TOKEN");
        c
    };
    let err = run_err(&mut query(&["SELECT 1"]));
    assert!(err.contains("Unauthenticated"), "{err}");
    let err = run_err(&mut query(&["SELECT 1", "--token", "nope"]));
    assert!(err.contains("Unauthenticated"), "{err}");
    let err = run_err(&mut query(&["DROP TABLE page_stats", "--token", "the-token"]));
    assert!(err.contains("PermissionDenied: DROP is not allowed"), "{err}");
    let err = run_err(&mut query(&["SELECT nosuch FROM page_stats", "--token", "the-token"]));
    assert!(err.contains("InvalidArgument") && err.contains("nosuch"), "{err}");
    let out = run_ok(&mut query(&[
        "SELECT count(*) AS n FROM page_stats",
        "--token",
        "the-token",
        "--format",
        "csv",
    ]));
    assert!(out.starts_with("n\n"), "{out}");
    let out = run_ok(&mut query(&[
        "SELECT 1 AS one",
        "--user",
        "analyst",
        "--password",
        "the-password",
        "--format",
        "csv",
    ]));
    assert_eq!(out, "one\n1\n");
    let err = run_err(&mut query(&["SELECT 1", "--user", "analyst", "--password", "wrong"]));
    assert!(err.contains("login as analyst failed"), "{err}");
    assert!(server.process.terminate());
}

#[test]
fn a_server_beyond_loopback_refuses_to_start_without_auth() {
    let scratch = Scratch::new("exposure");
    let lake = scratch.path("lake");
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let err = run_err(strata(&config).args(["serve", "--address", "0.0.0.0:0"]));
    assert!(
        err.contains("refusing to serve on 0.0.0.0:0 without authentication"),
        "{err}"
    );
    assert!(err.contains("serve.auth"), "{err}");
}

#[test]
fn flight_sql_over_tls_to_strata_query_adbc_pyarrow_and_jdbc_and_no_plaintext_tokens_beyond_loopback() {
    // A JVM beside the server, and timing-sensitive refusals: one at a time with the other
    // heavy tests.
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("tls");
    let lake = scratch.path("lake");
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let data = scratch.path("events.jsonl");
    generate(&config, &data, 5_000, 9);
    let (ca, cert, key) = certificates(&scratch.0);
    let env = [
        ("STRATA_AUTH_TOKEN", "the-token"),
        ("STRATA_TLS_CERT", cert.to_str().unwrap()),
        ("STRATA_TLS_KEY", key.to_str().unwrap()),
    ];
    let imported = run_ok(strata(&config).args(["import", "page_views"]).arg(&data).envs(env));
    let events: u64 = imported
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the import's summary: {imported}"));
    assert!(events > 4_000, "{imported}");
    // Views for the JDBC driver to query.
    run_ok(strata(&config).args(["batch", "run"]).envs(env));

    let server = StrataServer::start(&config, &env);
    let tls = format!("grpc+tls://{}", server.address);
    let plaintext = format!("grpc://{}", server.address);
    let sql = "SELECT count(*) AS n FROM raw.page_views";
    let query = |endpoint: &str| {
        let mut c = strata(&config);
        c.args([
            "query",
            sql,
            "--format",
            "csv",
            "--token",
            "the-token",
            "--endpoint",
            endpoint,
        ])
        .env_remove("STRATA_TLS_CA");
        c
    };
    // strata query trusting the CA: the events imported, counted over TLS.
    let out = run_ok(query(&tls).arg("--tls-ca").arg(&ca));
    assert_eq!(out, format!("n\n{events}\n"));
    // Trusting only the system's roots, or speaking plaintext to the TLS port: refused.
    let err = run_err(&mut query(&tls));
    assert!(
        err.contains("cannot connect") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    // The TCP connection opens, then the server drops it at the failed TLS handshake: the
    // client says the server was not reached (whether at connect or at the first call
    // depends on when HTTP/2 notices) and never prints an answer.
    let err = run_err(&mut query(&plaintext));
    assert!(
        err.contains(&format!("cannot connect to {plaintext}")) && err.contains("grpc+tls://"),
        "{err}"
    );
    // ADBC and pyarrow.flight trusting the CA answer the same; without it, refused.
    let out = run_python(
        "tls.py",
        &[
            "--endpoint",
            &tls,
            "--ca",
            ca.to_str().unwrap(),
            "--token",
            "the-token",
            "--sql",
            sql,
        ],
    );
    assert!(out.contains(&format!("adbc: [{events}]")), "{out}");
    assert!(out.contains("tls: both clients answered over TLS"), "{out}");
    // The JDBC driver with useEncryption=true and a trust store holding the CA answers as
    // ADBC does; with the system's trust store only, it is refused at the handshake.
    let out = run_python(
        "jdbc.py",
        &[
            "--endpoint",
            &tls,
            "--token",
            "the-token",
            "--ca",
            ca.to_str().unwrap(),
            "--scratch",
            scratch.0.to_str().unwrap(),
        ],
    );
    println!("{out}");
    assert!(out.contains(&format!("jdbc: raw rows {events}\n")), "{out}");
    assert!(
        out.contains("jdbc: a driver without the CA in its trust store is refused"),
        "{out}"
    );
    assert!(out.contains("jdbc: every answer equals ADBC"), "{out}");
    drop(server);

    // Beyond loopback, a token over plaintext is refused at start, naming the keys to set.
    let err = run_err(
        strata(&config)
            .args(["serve", "--address", "0.0.0.0:0"])
            .env("STRATA_AUTH_TOKEN", "the-token")
            .env_remove("STRATA_TLS_CERT")
            .env_remove("STRATA_TLS_KEY"),
    );
    assert!(err.contains("serve.tls_cert") && err.contains("plaintext"), "{err}");
    // A certificate without its key names the missing key.
    let err = run_err(
        strata(&config)
            .args(["serve"])
            .env("STRATA_TLS_CERT", &cert)
            .env_remove("STRATA_TLS_KEY"),
    );
    assert!(err.contains("serve.tls_key") && err.contains("is missing"), "{err}");
}
