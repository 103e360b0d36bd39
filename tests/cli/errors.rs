//! Bad input exits 2 before any request is sent, naming file, line and field.

use crate::support::Project;

const LIMITS: &str = "[[limits]]\nname = \"rpm\"\nrate = 600\nper = \"1m\"";

/// Runs `run` on `worklist` with `config` and checks: exit 2, nothing sent, and stderr
/// contains every expected fragment.
fn refused(p: &Project, worklist: &str, config: &str, expect: &[&str]) {
    let run = p.cmd(&["run", worklist, "-c", config, "--db", "e.db"]);
    run.expect_code(2);
    let err = run.stderr();
    for fragment in expect {
        assert!(
            err.contains(fragment),
            "stderr lacks {fragment:?}\n{}",
            run.dump()
        );
    }
    assert!(
        err.contains("hint:"),
        "every error says how to fix it\n{}",
        run.dump()
    );
    assert!(
        p.records().is_empty(),
        "nothing may be sent\n{}",
        run.dump()
    );
}

#[test]
fn missing_worklist() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(LIMITS, 2);
    refused(&p, "nope.csv", config.to_str().unwrap(), &["nope.csv"]);
}

#[test]
fn ragged_csv_row_names_its_line() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(LIMITS, 2);
    p.write("w.csv", "id,prompt\na,hello\nb,hi,extra\nc,ok\n");
    refused(&p, "w.csv", config.to_str().unwrap(), &["w.csv:3"]);
}

#[test]
fn duplicate_id_names_both_lines() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(LIMITS, 2);
    p.write("w.csv", "id,prompt\na,hello\nb,hi\na,again\n");
    refused(
        &p,
        "w.csv",
        config.to_str().unwrap(),
        &["w.csv:4", "`a`", "line 2"],
    );
}

#[test]
fn non_utf8_bytes_name_line_and_field() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(LIMITS, 2);
    p.write("w.csv", b"id,prompt\na,hello\nb,caf\xe9\n");
    refused(
        &p,
        "w.csv",
        config.to_str().unwrap(),
        &["w.csv:3", "prompt", "UTF-8"],
    );
}

#[test]
fn bad_jsonl_line_names_its_line() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(LIMITS, 2);
    p.write(
        "w.jsonl",
        "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": }\n",
    );
    refused(&p, "w.jsonl", config.to_str().unwrap(), &["w.jsonl:2"]);
}

#[test]
fn unknown_config_key_lists_valid_keys() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(&format!("{LIMITS}\nratee = 5"), 2);
    let worklist = p.worklist(3);
    refused(
        &p,
        worklist.to_str().unwrap(),
        config.to_str().unwrap(),
        &[
            "ratebound.toml:14:1",
            "ratee",
            "name, unit, rate, quota, per",
        ],
    );
}

#[test]
fn malformed_toml_names_line_and_column() {
    let p = Project::new().with_mock("mock://openai");
    p.worklist(3);
    p.write(
        "bad.toml",
        "[api]\nbase_url = \"http://127.0.0.1:1\n[request]\n",
    );
    refused(&p, "work.csv", "bad.toml", &["bad.toml:2:"]);
}

#[test]
fn placeholder_without_a_column_names_the_field_and_the_columns() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(LIMITS, 2);
    p.write("w.csv", "id,text\na,hello\n");
    refused(
        &p,
        "w.csv",
        config.to_str().unwrap(),
        &["ratebound.toml:7", "{{prompt}}", "`text`"],
    );
}

#[test]
fn zero_and_negative_rates_are_refused() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(3);
    let config = p.config(
        "[[limits]]\nname = \"a\"\nrate = 0\nper = \"1m\"\n\n[[limits]]\nname = \"b\"\nrate = -3\nper = \"1s\"",
        2,
    );
    refused(
        &p,
        worklist.to_str().unwrap(),
        config.to_str().unwrap(),
        &["ratebound.toml:12:8", "`0`", "ratebound.toml:17:8", "`-3`"],
    );
}

#[test]
fn an_item_too_large_for_a_limit_is_refused_before_sending() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(
        "[[limits]]\nname = \"tpm\"\nunit = \"tokens\"\nrate = 10\nper = \"1m\"",
        2,
    );
    let worklist = p.worklist(3);
    refused(
        &p,
        worklist.to_str().unwrap(),
        config.to_str().unwrap(),
        &["work.csv:2", "tpm"],
    );
}

#[test]
fn a_missing_environment_variable_is_named_and_its_value_never_printed() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(2);
    let text = std::fs::read_to_string(p.config(LIMITS, 2))
        .unwrap()
        .replace("timeout = \"10s\"", "timeout = \"10s\"\nheaders = { Authorization = \"Bearer ${RATEBOUND_TEST_UNSET_KEY}\" }");
    let config = p.write("env.toml", text);
    refused(
        &p,
        worklist.to_str().unwrap(),
        config.to_str().unwrap(),
        &["RATEBOUND_TEST_UNSET_KEY", "env.toml:4"],
    );
}

#[test]
fn an_item_naming_an_undefined_tier_or_no_class_names_its_line() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(
        &format!(
            "{LIMITS}\n[tenants]\ntier_field = \"plan\"\n[tiers.free]\nlimits = [{{ name = \"rpm\", rate = 3, per = \"1m\" }}]\n[[classes]]\nname = \"urgent\"\nshare = 1\nmin_priority = 1\n"
        ),
        2,
    );
    p.write(
        "t.csv",
        "id,tenant,plan,priority,prompt\na,acme,free,1,hi\nb,bob,gold,1,hi\nc,cy,free,0,hi\n",
    );
    refused(
        &p,
        "t.csv",
        config.to_str().unwrap(),
        &[
            "t.csv:3: item `b`: field `plan` names tier `gold`",
            "t.csv:4: item `c`: no priority class takes this item",
        ],
    );
}

#[test]
fn a_step_reading_an_unknown_step_or_a_missing_column_is_refused_at_its_line() {
    let p = Project::new().with_mock("mock://generic");
    p.write("w.csv", "id,kind,campaign\na,c,1\n");
    let config = format!(
        "[api]\nbase_url = \"{}\"\n[request]\npath = \"/\"\n[kinds.c]\n[[kinds.c.steps]]\nname = \"create\"\npath = \"/c/{{{{campaign}}}}\"\n[[kinds.c.steps]]\nname = \"stats\"\npath = \"/c/{{{{steps.craete.body.id}}}}\"\n",
        p.mock_url()
    );
    p.write("c.toml", &config);
    refused(
        &p,
        "w.csv",
        "c.toml",
        &["c.toml:11:12", "`craete`", "`create`"],
    );
    p.write("c.toml", config.replace("steps.craete.body.id", "camp"));
    refused(&p, "w.csv", "c.toml", &["c.toml:11", "`camp`", "no column"]);
}
