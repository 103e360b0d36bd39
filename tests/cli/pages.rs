//! Paginated listings through the binary: kill -9 mid-listing, rerun, and every record is
//! stored once, in order, with only pages in flight at a kill fetched again.

use std::collections::HashMap;

use crate::support::{Project, item_of, wait_until};

const LISTINGS: usize = 4;
const PAGES: usize = 30;
const WORKERS: usize = 8;

#[test]
fn kill_9_mid_pagination_resumes_every_listing_from_its_next_page() {
    let p = Project::new().with_mock("mock://zendesk?rps=40&latency=10ms");
    let mut worklist = String::from("id,kind,total\n");
    for i in 1..=LISTINGS {
        worklist.push_str(&format!("list-{i},articles,{}\n", PAGES * 100));
    }
    let worklist = p.write("lists.csv", worklist);
    let config = p.write(
        "pages.toml",
        format!(
            r#"[api]
base_url = "{}"
[request]
method = "GET"
path = "/unused"
headers = {{ "X-Item" = "{{{{id}}}}" }}
[kinds.articles]
[[kinds.articles.steps]]
name = "list"
path = "/api/v2/help_center/articles?total={{{{total}}}}"
paginate = {{ cursor = "/meta/after_cursor", param = "page[after]", page_size = 100, size_param = "page[size]", items = "/articles" }}
[[limits]]
name = "account"
rate = 40
per = "1s"
[workers]
max = {WORKERS}
"#,
            p.mock_url()
        ),
    );
    let args = [
        "run",
        worklist.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--db",
        "p.db",
        "--quiet",
    ];
    let mut kills = 0;
    for share in [3, 2] {
        // Kill once a third, then half, of the pages have been fetched.
        let target = LISTINGS * PAGES / share;
        let mut child = p.command(&args).spawn().unwrap();
        wait_until("the listings to go on, or the run to end", || {
            (p.records().len() >= target || child.try_wait().unwrap().is_some()).then_some(())
        });
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 1, "the run should still be going at a kill point");
    assert!(
        p.records().len() < LISTINGS * PAGES,
        "the listings were cut off mid-way"
    );

    let run = p.cmd(&args);
    run.expect_code(0);
    let exported = p.export(&p.path("p.db"));
    assert_eq!(exported.len(), LISTINGS, "one record per listing");
    let expected: Vec<String> = (1..=PAGES * 100).map(|k| format!("articles-{k}")).collect();
    for listing in &exported {
        assert_eq!(listing["status"], "done");
        assert_eq!(listing["body"]["pages"], PAGES as u64);
        let ids: Vec<&str> = (listing["body"]["items"].as_array().unwrap().iter())
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids, expected,
            "{}: every record once, in order",
            listing["id"]
        );
    }
    let mut fetched: HashMap<(String, String), usize> = HashMap::new();
    for r in p.records().iter().filter(|r| r.status == 200) {
        *fetched
            .entry((item_of(r).unwrap(), r.path.clone()))
            .or_default() += 1;
    }
    assert_eq!(
        fetched.len(),
        LISTINGS * PAGES,
        "every page of every listing"
    );
    let again: usize = fetched.values().map(|n| n - 1).sum();
    assert!(
        again <= kills * WORKERS,
        "{again} pages fetched again after {kills} kills with {WORKERS} workers"
    );
}
