//! A real PostgreSQL for the tests: `initdb` into a temporary directory, `pg_ctl start` on a
//! free loopback port as an unprivileged user (`postgres`, or `nobody`, when the tests run as
//! root), stopped when the value is dropped. Without PostgreSQL installed a test is skipped
//! outside CI and fails under it (`crate::needs`).

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cosigner::ledger::postgres::PgLedger;
use secrecy::SecretString;

/// The superuser's password: connections over TCP authenticate with SCRAM.
const PASSWORD: &str = "pg-test-pw-5b1e0c";

/// One running PostgreSQL server.
pub(crate) struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    user: Option<String>,
    /// The server's options (`pg_ctl -o`), to start it again after [`Pg::stop`].
    options: String,
}

/// The directory holding `initdb` and `pg_ctl`: on the `PATH`, else the newest
/// `/usr/lib/postgresql/*/bin` (where Debian's package puts them).
fn pg_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let version = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin)
    })
}

/// The user the server runs as when the tests run as root (PostgreSQL refuses root).
fn unprivileged_user() -> Option<String> {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !root {
        return None;
    }
    ["postgres", "nobody"]
        .into_iter()
        .find(|u| {
            Command::new("id")
                .arg("-u")
                .arg(u)
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_string)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pg {
    /// Starts a server, or returns `None` after saying why when PostgreSQL is not installed
    /// (outside CI only: in CI a missing PostgreSQL fails the test).
    pub(crate) fn start() -> Option<Pg> {
        Self::start_with(|_| {})
    }

    /// Starts a server after `prepare` has had the data directory (to add files such as a
    /// certificate), with `-c ssl=on` when it wrote `server.crt`.
    pub(crate) fn start_with(prepare: impl FnOnce(&Path)) -> Option<Pg> {
        Self::start_as(prepare, false)
    }

    /// A server that syncs every commit to disk (`fsync=on`, the default), as production does:
    /// for the throughput bench, which compares it with SQLite's `synchronous=FULL`.
    pub(crate) fn start_durable() -> Option<Pg> {
        Self::start_as(|_| {}, true)
    }

    fn start_as(prepare: impl FnOnce(&Path), durable: bool) -> Option<Pg> {
        let bin = pg_bin();
        if !crate::needs::found_or_skip(
            "PostgreSQL (initdb and pg_ctl, on the PATH or in /usr/lib/postgresql/*/bin)",
            bin.is_some(),
            "apt-get install postgresql",
        ) {
            return None;
        }
        let bin = bin?;
        let user = unprivileged_user();
        let dir = tempfile::Builder::new()
            .prefix("cosigner-pg")
            .tempdir()
            .unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        let mut pg = Pg {
            dir,
            bin,
            port: free_port(),
            user,
            options: String::new(),
        };
        pg.chown(pg.dir.path());
        pg.chown(&pwfile);
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        prepare(&data);
        let ssl = if data.join("server.crt").exists() {
            for f in ["server.crt", "server.key"] {
                pg.chown(&data.join(f));
            }
            " -c ssl=on"
        } else {
            ""
        };
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c fsync={} -c unix_socket_directories={}{ssl}",
            pg.port,
            if durable { "on" } else { "off" },
            pg.dir.path().display()
        );
        pg.options = options;
        pg.start_again();
        Some(pg)
    }

    /// Stops the server (`pg_ctl stop -m fast`): every session ends, and nothing answers on
    /// its port until [`Pg::start_again`].
    pub(crate) fn stop(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts the server (again) on the same port, with the same data and options.
    pub(crate) fn start_again(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "-o",
                &self.options,
                "start",
            ],
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn chown(&self, path: &Path) {
        if let Some(user) = &self.user {
            let out = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(path)
                .output()
                .unwrap();
            assert!(out.status.success(), "chown {}: {out:?}", path.display());
        }
    }

    /// One of the server's programs, to run as the unprivileged user.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        }
    }

    /// Runs one of the server's programs; panics with its output on failure.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{program} failed: {}\n{}\nserver log:\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every session ends, transactions in
    /// progress are rolled back, committed ones stay.
    pub(crate) fn restart(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "restart",
            ],
        );
    }

    /// The server's log file.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The port the server listens on (127.0.0.1).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server, as the superuser, without the password.
    pub(crate) fn url(&self, db: &str, sslmode: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode={sslmode}",
            self.port
        )
    }

    /// The superuser's password.
    pub(crate) fn password(&self) -> SecretString {
        SecretString::from(PASSWORD)
    }

    /// The superuser's password as text (to look for it where it must not be).
    pub(crate) fn password_text(&self) -> &'static str {
        PASSWORD
    }

    /// A new database `name`.
    pub(crate) async fn create_db(&self, name: &str) {
        self.admin("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    }

    /// A ledger in the database `postgres`, without TLS.
    pub(crate) async fn ledger(&self) -> PgLedger {
        PgLedger::connect(&self.url("postgres", "disable"), Some(self.password()))
            .await
            .unwrap()
    }

    /// A superuser connection to database `db`, for what the cosigner never does (edits,
    /// killing connections).
    pub(crate) async fn admin(&self, db: &str) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .password(PASSWORD)
            .dbname(db);
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}
