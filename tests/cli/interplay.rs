//! Where features meet: multi-request jobs under tenant caps and worker slots.

use crate::support::Project;

/// A step that cannot be rendered (its earlier response lacks the field) fails its item,
/// and the tenant's in-flight cap of 1 is given back: the tenant's next items still go out
/// and the run ends instead of waiting forever.
#[test]
fn a_broken_step_gives_back_its_tenants_slot() {
    let p = Project::new().with_mock("mock://generic?latency=5ms");
    let worklist = p.write(
        "w.csv",
        "id,kind,tenant,campaign\na,c,acme,1\nb,c,acme,2\nc,c,acme,3\n",
    );
    let config = p.write(
        "c.toml",
        format!(
            r#"[api]
base_url = "{}"
[request]
path = "/"
[tenants]
max_in_flight = 1
[kinds.c]
[[kinds.c.steps]]
name = "create"
path = "/c/{{{{campaign}}}}"
[[kinds.c.steps]]
name = "stats"
path = "/c/{{{{steps.create.body.nope}}}}/stats"
"#,
            p.mock_url()
        ),
    );
    let run = p.run(&worklist, &config, &["--db", "w.db", "--quiet"]);
    run.expect_code(1);
    let failed = p.export(&p.path("w.db"));
    assert_eq!(failed.len(), 3, "every item finished\n{}", run.dump());
    assert!(failed.iter().all(|r| r["status"] == "failed"), "{failed:?}");
}

/// A job of four parallel calls holds four worker slots: with 8 workers, at most two such
/// jobs (8 requests) are ever in flight together.
#[test]
fn parallel_steps_hold_one_worker_slot_each() {
    let p = Project::new().with_mock("mock://generic?latency=100ms");
    let mut worklist = String::from("id,kind,campaign\n");
    for i in 0..12 {
        worklist.push_str(&format!("c{i},fan,{i}\n"));
    }
    let worklist = p.write("w.csv", worklist);
    let mut steps = String::new();
    for name in ["sent", "opened", "clicked", "replied"] {
        steps.push_str(&format!(
            "[[kinds.fan.steps]]\nname = \"{name}\"\nparallel = true\npath = \"/c/{{{{campaign}}}}/{name}\"\n"
        ));
    }
    let config = p.write(
        "c.toml",
        format!(
            "[api]\nbase_url = \"{}\"\n[request]\npath = \"/\"\n[workers]\nmax = 8\n[kinds.fan]\n{steps}",
            p.mock_url()
        ),
    );
    let run = p.run(&worklist, &config, &["--db", "w.db", "--quiet"]);
    run.expect_code(0);
    let mut arrivals: Vec<u64> = p.records().iter().map(|r| r.at).collect();
    assert_eq!(arrivals.len(), 48, "{}", run.dump());
    arrivals.sort_unstable();
    // Every request takes 100 ms: those arriving within 100 ms of each other overlapped.
    let most = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|&&t| t - arrivals[i] < 90_000_000)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most <= 8,
        "{most} requests in flight at once with 8 workers"
    );
}
