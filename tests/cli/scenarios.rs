//! The scenarios in `jobs/`, each run against the matching mock profile.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use crate::support::{Project, item_of};

/// X campaigns: quests (2 calls) and rewards (4 calls) share 180 calls per window. No
/// UTC-aligned window may ever hold more than 180 calls, and the mock refuses (429) any
/// campaign that does not fit what is left, so "no 429" also shows that a reward never
/// started with only 2 calls left.
#[test]
fn x_campaigns_never_exceed_180_calls_per_window() {
    let p = Project::new().with_mock("mock://x?window=180/5s&latency=10ms");
    let (worklist, config) = scenario(
        &p,
        "x-campaigns",
        "mock://x?window=180/5s&latency=20ms",
        &[],
    );
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
        .map(|r| items[&item_of(r).unwrap()]["priority"].parse().unwrap())
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
    let tenant =
        |r: &ratebound::mock::provider::Record| items[&item_of(r).unwrap()]["tenant"].clone();
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

/// A scenario's work list and config from `jobs/`, the config pointed at the test's mock
/// (`replace` pairs rewrite it further, e.g. to compress time).
fn scenario(
    p: &Project,
    name: &str,
    base_url: &str,
    replace: &[(&str, &str)],
) -> (PathBuf, PathBuf) {
    let root = env!("CARGO_MANIFEST_DIR");
    let worklist = p.write(
        &format!("{name}.csv"),
        std::fs::read(format!("{root}/jobs/{name}.csv")).unwrap(),
    );
    let mut config = std::fs::read_to_string(format!("{root}/jobs/{name}.toml"))
        .unwrap()
        .replace(base_url, &p.mock_url());
    assert!(
        config.contains(&p.mock_url()),
        "the scenario's base_url was redirected"
    );
    for (from, to) in replace {
        assert!(config.contains(from), "`{from}` is in jobs/{name}.toml");
        config = config.replace(from, to);
    }
    (worklist, p.write(&format!("{name}.toml"), config))
}

/// Whether requests at `times` (ns) fit a bucket of `rate` per second holding `burst`,
/// allowing `slack` units for the time between admission and arrival at the mock.
fn fits_bucket(times: &[u64], rate: f64, burst: f64, slack: f64) -> Result<(), String> {
    let mut level = burst;
    let mut last = times.first().copied().unwrap_or(0);
    for (i, &t) in times.iter().enumerate() {
        level = (level + (t - last) as f64 / 1e9 * rate).min(burst) - 1.0;
        last = t;
        if level < -slack {
            return Err(format!(
                "request {i} at {t} ns found the bucket at {level:.2}"
            ));
        }
    }
    Ok(())
}

/// The dashboard: 40 campaigns, each four activity calls sent in parallel, under Lemlist's
/// 20 requests per 2 s (compressed here to 20 per 500 ms). Every UTC-aligned window holds at
/// most 20 calls, the mock refused none, and each campaign's four calls share a window:
/// they were reserved together.
#[test]
fn dashboard_fans_out_four_calls_per_campaign_within_20_per_window() {
    let p = Project::new().with_mock("mock://generic?window=20/500ms&latency=10ms");
    let (worklist, config) = scenario(
        &p,
        "dashboard",
        "mock://generic?window=20/2s&latency=20ms",
        &[("per = \"2s\"", "per = \"500ms\"")],
    );
    let run = p.run(&worklist, &config, &["--db", "d.db", "--quiet"]);
    run.expect_code(0);
    let records = p.records();
    assert_eq!(
        records.len(),
        160,
        "four calls per campaign\n{}",
        run.dump()
    );
    assert!(
        records.iter().all(|r| r.status == 200),
        "a call was refused\n{}",
        run.dump()
    );
    let window_of =
        |r: &ratebound::mock::Record| r.wall.duration_since(UNIX_EPOCH).unwrap().as_millis() / 500;
    let mut windows: BTreeMap<u128, u64> = BTreeMap::new();
    let mut campaigns: BTreeMap<String, Vec<u128>> = BTreeMap::new();
    for r in &records {
        *windows.entry(window_of(r)).or_default() += 1;
        campaigns
            .entry(item_of(r).unwrap())
            .or_default()
            .push(window_of(r));
    }
    assert!(
        windows.values().all(|&n| n <= 20),
        "calls per window: {windows:?}"
    );
    assert!(windows.len() >= 8, "160 calls need 8 windows: {windows:?}");
    assert_eq!(campaigns.len(), 40);
    for (campaign, w) in &campaigns {
        assert!(
            w.len() == 4 && w.iter().all(|&x| x == w[0]),
            "{campaign}'s calls were split across windows: {w:?}"
        );
    }
    let export = p.export(&p.path("d.db"));
    assert_eq!(export.len(), 40, "one record per campaign");
    let steps = export[0]["body"]["steps"].as_object().unwrap();
    let names: Vec<&str> = steps.keys().map(String::as_str).collect();
    assert_eq!(names, ["clicked", "opened", "replied", "sent"]);
}

/// The help-centre sync: three data sources paged to the end at the largest page size
/// (cursor, `links.next`, `Link` header), real-time updates chained on an earlier
/// response's id, an account limit the mock enforces and a per-endpoint limit on the
/// incremental export. Priority classes hold their shares: while the 20 real-time updates
/// (30%) wait their turn, the incremental exports (50%) and the full sync (20%) start too,
/// instead of waiting behind the updates' backlog.
#[test]
fn helpdesk_sync_pages_every_source_to_the_end_under_every_limit() {
    let p = Project::new().with_mock("mock://zendesk?rps=20&latency=10ms");
    let (worklist, config) = scenario(
        &p,
        "helpdesk-sync",
        "mock://zendesk?rps=20&latency=20ms",
        &[],
    );
    let run = p.run(&worklist, &config, &["--db", "h.db", "--quiet"]);
    run.expect_code(0);
    let records = p.records();
    assert!(
        records.iter().all(|r| r.status == 200),
        "the mock refused a request\n{}",
        run.dump()
    );
    // 20 updates x 2, tickets 1200 / 100, users 600 / 100, articles 950 + 420 + 130.
    assert_eq!(records.len(), 40 + 12 + 6 + 10 + 5 + 2, "{}", run.dump());
    let listings: Vec<_> = records
        .iter()
        .filter(|r| r.path.contains("total="))
        .collect();
    assert!(
        listings
            .iter()
            .all(|r| r.path.contains("size]=100") || r.path.contains("per_page=100")),
        "every page asks for the provider's largest page"
    );
    let incremental: Vec<u64> = records
        .iter()
        .filter(|r| r.path.starts_with("/api/v2/incremental/"))
        .map(|r| r.at)
        .collect();
    assert_eq!(incremental.len(), 12);
    fits_bucket(&incremental, 4.0, 4.0, 0.5).unwrap_or_else(|e| panic!("incremental limit: {e}"));
    let first_at = |kind: &str| {
        records
            .iter()
            .filter(|r| item_of(r).is_some_and(|i| i.starts_with(kind)))
            .map(|r| r.at)
            .min()
            .unwrap()
    };
    let last_update_start = (1..=20)
        .map(|i| first_at(&format!("update-{i:02}")))
        .max()
        .unwrap();
    let articles_start = first_at("articles-");
    let tickets_start = first_at("tickets");
    assert!(
        articles_start < last_update_start && tickets_start < last_update_start,
        "every class gets its share: updates until {last_update_start}, tickets from \
         {tickets_start}, articles from {articles_start}\n{}",
        records
            .iter()
            .map(|r| format!("{} {} {}", r.at, item_of(r).unwrap_or_default(), r.path))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The translations step used the id the article step's response gave.
    let by_item = |id: &str| {
        records
            .iter()
            .filter(|r| item_of(r).as_deref() == Some(id))
            .count()
    };
    assert_eq!(by_item("update-07"), 2);
    let export = p.export(&p.path("h.db"));
    assert_eq!(export.len(), 25);
    assert!(export.iter().all(|r| r["status"] == "done"));
    let tickets = export.iter().find(|r| r["id"] == "tickets").unwrap();
    assert_eq!(tickets["body"]["pages"], 12);
    assert_eq!(tickets["body"]["items"].as_array().unwrap().len(), 1200);
    let update = export.iter().find(|r| r["id"] == "update-07").unwrap();
    let id = update["body"]["steps"]["article"]["body"]["id"]
        .as_str()
        .unwrap();
    assert_eq!(
        update["body"]["steps"]["translations"]["body"]["path"],
        format!("/api/v2/help_center/articles/{id}/translations")
    );
}
