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

/// The items of a CSV in `jobs/`, by id: (priority, other columns by name).
fn jobs_csv(name: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut reader = csv::Reader::from_path(format!("{root}/jobs/{name}")).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let fields: BTreeMap<String, String> = headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
            (fields["id"].clone(), fields)
        })
        .collect()
}

fn item_of(r: &ratebound::mock::provider::Record) -> String {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-item"))
        .map(|(_, v)| v.clone())
        .unwrap()
}

/// Artist bios: rpm + tpm + a daily quota paused at 80%, featured artists first. The day is
/// compressed to 1 s and its quota to 120 (96 at 80%), so the 312 bios need four windows;
/// the mock enforces Tier 3's rpm and tpm and answers 429 to anything over them.
#[test]
fn artist_bios_go_in_priority_order_within_every_limit() {
    let root = env!("CARGO_MANIFEST_DIR");
    let items = jobs_csv("artist-bios.csv");
    let p = Project::new().with_mock("mock://openai?rpm=5000&tpm=4000000&latency=20ms");
    let worklist = p.write(
        "artist-bios.csv",
        std::fs::read(format!("{root}/jobs/artist-bios.csv")).unwrap(),
    );
    let config = std::fs::read_to_string(format!("{root}/jobs/artist-bios.toml"))
        .unwrap()
        .replace(
            "mock://openai?rpm=5000&tpm=4000000&latency=50ms",
            &p.mock_url(),
        )
        .replace("quota = 10000\nper = \"1d\"", "quota = 120\nper = \"1s\"");
    assert!(config.contains(&p.mock_url()) && config.contains("quota = 120"));
    let config = p.write("bios.toml", config);
    let run = p.run(&worklist, &config, &["--db", "bios.db", "--quiet"]);
    run.expect_code(0);

    let records = p.records();
    assert_eq!(
        records.len(),
        items.len(),
        "each bio sent once\n{}",
        run.dump()
    );
    assert!(
        records.iter().all(|r| r.status == 200),
        "a 429\n{}",
        run.dump()
    );
    let mut windows: BTreeMap<u64, u64> = BTreeMap::new();
    for r in &records {
        let secs = r.wall.duration_since(UNIX_EPOCH).unwrap().as_secs();
        *windows.entry(secs).or_default() += 1;
    }
    assert!(
        windows.values().all(|&n| n <= 96) && windows.len() >= 4,
        "requests per (compressed) day: {windows:?}"
    );
    // Dispatch is in strict priority order; the pool's 64 requests sent together may arrive
    // in any order, so allow that much slack at each boundary. (The priority-5 items are
    // spread over the whole file, the last at line 295: file order would fail this.)
    let priorities: Vec<i64> = records
        .iter()
        .map(|r| items[&item_of(r)]["priority"].parse().unwrap())
        .collect();
    for level in [10, 5] {
        let above = priorities.iter().filter(|&&p| p >= level).count();
        let last = priorities.iter().rposition(|&p| p >= level).unwrap();
        assert!(
            last < above + 64,
            "an item of priority >= {level} arrived at position {last} of {}: {priorities:?}",
            records.len()
        );
    }
    assert_eq!(p.export(&p.path("bios.db")).len(), items.len());
}

/// Bot tenants: free, pro and enterprise customers, each with rpm, tpm, daily and budget
/// limits of its own plan, sharing one key fairly. A minute is compressed to a second (the
/// mock's key limits scaled to match). Every message is answered, no customer's own rate
/// is ever exceeded, the key's limits never answer 429, and rate-limited free customers
/// hold nobody up: every customer is served within the first dozen requests and the paid
/// ones finish long before the free ones.
#[test]
fn bot_tenants_share_the_key_fairly_within_each_plans_limits() {
    let root = env!("CARGO_MANIFEST_DIR");
    let items = jobs_csv("bot-tenants.csv");
    let p = Project::new().with_mock("mock://openai?rpm=36000&tpm=24000000&latency=20ms");
    let worklist = p.write(
        "bot-tenants.csv",
        std::fs::read(format!("{root}/jobs/bot-tenants.csv")).unwrap(),
    );
    let config = std::fs::read_to_string(format!("{root}/jobs/bot-tenants.toml"))
        .unwrap()
        .replace(
            "mock://openai?rpm=600&tpm=400000&latency=50ms",
            &p.mock_url(),
        )
        .replace("per = \"1m\"", "per = \"1s\"")
        .replace("per = \"1d\"", "per = \"24m\"");
    assert!(config.contains(&p.mock_url()) && !config.contains("\"1m\""));
    let config = p.write("bots.toml", config);
    let run = p.run(&worklist, &config, &["--db", "bots.db", "--quiet"]);
    run.expect_code(0);

    let records = p.records();
    assert_eq!(
        records.len(),
        items.len(),
        "each message once\n{}",
        run.dump()
    );
    assert!(
        records.iter().all(|r| r.status == 200),
        "a 429\n{}",
        run.dump()
    );
    let tenant = |r: &ratebound::mock::provider::Record| items[&item_of(r)]["tenant"].clone();
    let mut arrivals: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &records {
        arrivals
            .entry(tenant(r))
            .or_default()
            .push(r.at as f64 / 1e9);
    }
    // A plan's rpm is a token bucket of `rate` per second (compressed) holding `rate`: in
    // any stretch [t_i, t_j] at most rate + rate * (t_j - t_i) requests (+1 for arrivals
    // bunched on the way).
    for (name, times) in &arrivals {
        let plan = &items.values().find(|i| &i["tenant"] == name).unwrap()["tier"];
        let rate = match plan.as_str() {
            "free" => 3.0,
            "pro" => 20.0,
            _ => 100.0,
        };
        for i in 0..times.len() {
            for j in i..times.len() {
                let n = (j - i + 1) as f64;
                assert!(
                    n <= rate + rate * (times[j] - times[i]) + 1.0,
                    "{name} ({plan}): {n} requests in {:.3} s",
                    times[j] - times[i]
                );
            }
        }
    }
    // The pool holds 32 requests at once, which may arrive in any order.
    let first: Vec<String> = records.iter().take(40).map(tenant).collect();
    let served: std::collections::BTreeSet<&String> = first.iter().collect();
    assert_eq!(
        served.len(),
        6,
        "customers in the first 40 requests: {first:?}"
    );
    let last = |n: &str| arrivals[n].last().copied().unwrap();
    assert!(
        last("fabrikam") < last("ana") && last("delta-labs") < last("ana"),
        "paid customers waited behind free ones: {:?}",
        arrivals
            .iter()
            .map(|(k, v)| (k, v.last()))
            .collect::<Vec<_>>()
    );
    let status = p.status(&p.path("bots.db"));
    let limits = status["limits"].as_array().unwrap();
    assert!(
        limits.iter().any(|l| l["name"] == "rpm@ana")
            && limits.iter().any(|l| l["name"] == "budget@fabrikam"),
        "each customer has its own buckets: {limits:?}"
    );
    for l in limits {
        assert!(l["used"].as_u64() <= l["limit"].as_u64(), "{l}");
    }
}
