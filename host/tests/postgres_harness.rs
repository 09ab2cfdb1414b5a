//! The test harness's PostgreSQL: each `fresh_database` is a new, empty database that a test
//! can reach, whether the server is `DATABASE_URL`'s or `scripts/postgres.sh`'s.

mod common;

use common::postgres;

#[test]
fn fresh_databases_are_distinct_and_reachable() {
    let first = postgres::fresh_database("harness");
    let second = postgres::fresh_database("harness");
    assert_ne!(first, second, "each call makes a new database");
    for url in [first, second] {
        let (one, name) = postgres::block_on(async {
            let client = postgres::connect(&url).await;
            let row = client
                .query_one("SELECT 1, current_database()::text", &[])
                .await
                .expect("SELECT 1 answers");
            (row.get::<_, i32>(0), row.get::<_, String>(1))
        });
        assert_eq!(one, 1);
        assert!(name.starts_with("hs_harness_"), "{name}");
        assert!(url.ends_with(&format!("/{name}")), "{url} names {name}");
    }
}
