//! Test support: a project in a tempdir (work list, config, db), the mock on loopback, and
//! a runner of the real binary that prints everything when an assertion fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ratebound::mock::provider::Record;
use ratebound::mock::{MockServer, MockSpec};

/// A scratch project: files in a tempdir and, optionally, a mock API.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub mock: Option<MockServer>,
}

/// The output of one command, with the command line for failure messages.
pub struct Run {
    pub line: String,
    pub output: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// Everything about this run, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "command: {}\nexit: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.line,
            self.code(),
            self.stdout(),
            self.stderr()
        )
    }
    /// Asserts the exit code, printing everything otherwise.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "{}", self.dump());
        self
    }
}

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ratebound"))
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
            mock: None,
        }
    }

    /// Starts a mock on loopback from a `mock://` URL.
    pub fn with_mock(mut self, url: &str) -> Project {
        let spec = MockSpec::parse_url(url).expect("mock url");
        self.mock = Some(MockServer::start(spec).expect("mock starts"));
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// The mock's base URL (the mock must have been started).
    pub fn mock_url(&self) -> String {
        self.mock.as_ref().expect("mock started").base_url()
    }

    pub fn records(&self) -> Vec<Record> {
        self.mock.as_ref().expect("mock started").records()
    }

    /// A config for the test mock with the given `[[limits]]` text.
    pub fn config(&self, limits: &str, workers: usize) -> PathBuf {
        let text = format!(
            r#"[api]
base_url = "{}"
timeout = "10s"

[request]
path = "/v1/chat/completions"
body = '{{"model": "m", "max_tokens": 20, "messages": [{{"role": "user", "content": "{{{{prompt}}}}"}}]}}'
headers = {{ "X-Item" = "{{{{id}}}}" }}

{limits}

[workers]
max = {workers}

[retry]
backoff = "20ms"
max_backoff = "200ms"
"#,
            self.mock_url()
        );
        self.write("ratebound.toml", text)
    }

    /// A CSV work list of `n` items `item-00001`... with short prompts.
    pub fn worklist(&self, n: usize) -> PathBuf {
        let mut text = String::from("id,prompt\n");
        for i in 1..=n {
            text.push_str(&format!("item-{i:05},\"Say hello to number {i}\"\n"));
        }
        self.write("work.csv", text)
    }

    /// Runs the binary in the project folder.
    pub fn cmd(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().expect("binary runs");
        Run {
            line: format!("ratebound {}", args.join(" ")),
            output,
        }
    }

    /// `ratebound run WORKLIST -c CONFIG` followed by `extra` (`--db`, `--quiet`, ...).
    pub fn run(&self, worklist: &Path, config: &Path, extra: &[&str]) -> Run {
        let mut args = vec![
            "run",
            worklist.to_str().expect("utf-8 path"),
            "-c",
            config.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        self.cmd(&args)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args).current_dir(self.dir.path());
        cmd
    }

    /// `export` as parsed JSON lines.
    pub fn export(&self, db: &Path) -> Vec<serde_json::Value> {
        let run = self.cmd(&["export", "--db", db.to_str().expect("utf-8 path")]);
        run.expect_code(0);
        run.stdout()
            .lines()
            .map(|l| serde_json::from_str(l).expect("export line is JSON"))
            .collect()
    }

    /// `status --json` parsed.
    pub fn status(&self, db: &Path) -> serde_json::Value {
        let run = self.cmd(&["status", "--db", db.to_str().expect("utf-8 path"), "--json"]);
        run.expect_code(0);
        serde_json::from_str(&run.stdout()).expect("status is one JSON object")
    }
}

/// The item id a recorded request carried in its `X-Item` header.
pub fn item_of(record: &Record) -> Option<String> {
    record
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-item"))
        .map(|(_, v)| v.clone())
}

/// Polls `check` until it returns a value (at most 30 s, a generous ceiling for a loaded
/// machine); on timeout, fails with `what` and the last state `describe` gives.
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "gave up waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Project {
    /// Polls `status --json` on `db` until `pred` holds, and returns that status.
    pub fn wait_for_status(
        &self,
        db: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_until(&format!("a status of {db} that holds"), || {
            // The db appears once the run has started.
            let run = self.cmd(&["status", "--db", db, "--json"]);
            let status: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap_or_default();
            (run.code() == 0 && pred(&status)).then_some(status)
        })
    }
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, ...) to the process `pid` this test started.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {signal} {pid}");
}
