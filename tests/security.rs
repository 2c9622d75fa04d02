//! Security: tokens, passwords, read-only SQL, and no unauthenticated remote serving.

use crate::common::{Scratch, StrataServer, run_err, run_ok, run_python, strata};
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
