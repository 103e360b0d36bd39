//! The scenarios in `jobs/`, each run against the matching mock profile.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use crate::support::Project;

/// X campaigns: quests (2 calls) and rewards (4 calls) share 180 calls per window. No
/// UTC-aligned window may ever hold more than 180 calls, and the mock refuses (429) any
/// campaign that does not fit what is left, so "no 429" also shows that a reward never
/// started with only 2 calls left.
#[test]
fn x_campaigns_never_exceed_180_calls_per_window() {
    let root = env!("CARGO_MANIFEST_DIR");
    let p = Project::new().with_mock("mock://x?window=180/5s&latency=10ms");
    let worklist = p.write(
        "x-campaigns.csv",
        std::fs::read(format!("{root}/jobs/x-campaigns.csv")).unwrap(),
    );
    let config = std::fs::read_to_string(format!("{root}/jobs/x-campaigns.toml"))
        .unwrap()
        .replace("mock://x?window=180/5s&latency=20ms", &p.mock_url());
    assert!(
        config.contains(&p.mock_url()),
        "the scenario's base_url was redirected"
    );
    let config = p.write("x.toml", config);
    let run = p.run(&worklist, &config, &["--db", "x.db", "--quiet"]);
    run.expect_code(0);

    let records = p.records();
    assert_eq!(
        records.len(),
        120,
        "each campaign sent once\n{}",
        run.dump()
    );
    assert!(
        records.iter().all(|r| r.status == 200),
        "a campaign was refused\n{}",
        run.dump()
    );
    let mut windows: BTreeMap<u64, u64> = BTreeMap::new();
    for r in &records {
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let calls = body["calls"].as_u64().unwrap();
        let secs = r.wall.duration_since(UNIX_EPOCH).unwrap().as_secs();
        *windows.entry(secs / 5).or_default() += calls;
    }
    assert_eq!(windows.values().sum::<u64>(), 80 * 2 + 40 * 4);
    assert!(
        windows.values().all(|&calls| calls <= 180),
        "calls per window: {windows:?}"
    );
    assert!(
        windows.len() >= 2,
        "320 calls need at least two windows: {windows:?}"
    );
    assert_eq!(p.export(&p.path("x.db")).len(), 120);
}
