//! Fixtures for the end-to-end tests: a scratch directory, the `strata` binary, servers
//! started on free ports and stopped by process id, the project's Python environment.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The project's Python (with DuckDB, ADBC, pyarrow, moto), installed by scripts/setup.sh.
pub fn python() -> PathBuf {
    let path = std::env::var_os("STRATA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "{} does not exist: run scripts/setup.sh (or scripts/test.sh) first, or set STRATA_PYTHON",
        path.display()
    );
    path
}

/// A scratch directory, removed when dropped (kept if STRATA_KEEP_TEST_DIRS is set).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("strata-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("STRATA_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `strata` with a config.
pub fn strata(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    // STRATA_TEST_LOG: another log filter for the processes of a test (for a diagnosis).
    let log = std::env::var("STRATA_TEST_LOG")
        .unwrap_or_else(|_| "warn,strata_speed=info,deltalake_core=error,buoyant_kernel=off".to_string());
    c.arg("--config").arg(config).env("STRATA_LOG", log);
    c
}

/// Runs a command, failing the test with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    check(&out, cmd, true)
}

/// Runs a command that must fail; returns its standard error.
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn check(out: &Output, cmd: &Command, want_success: bool) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.success(),
        want_success,
        "{cmd:?} exited with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

/// A free TCP port on 127.0.0.1 (for servers that cannot bind port 0 themselves).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// An HTTP GET of `path` (the ops endpoint: /health, /metrics); the whole response.
pub fn http_get(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to the ops endpoint");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    response
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what} exited with {status} before listening on {addr}:\n{err}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {addr} within 60 s");
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process stopped (SIGTERM, then SIGKILL) by its id when dropped.
pub struct Process {
    pub child: Child,
    pub name: String,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and wait for the exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("{} (pid {}) did not stop on SIGTERM: killed", self.name, self.pid());
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `strata serve` on a free port of 127.0.0.1; its address is read from its first line.
pub struct StrataServer {
    pub process: Process,
    pub address: SocketAddr,
}

impl StrataServer {
    pub fn start(config: &Path, extra_env: &[(&str, &str)]) -> StrataServer {
        Self::start_command(config, "serve", extra_env)
    }

    /// `strata <command> --address 127.0.0.1:0` for a command that serves Flight SQL
    /// (`serve`, `run`).
    pub fn start_command(config: &Path, command: &str, extra_env: &[(&str, &str)]) -> StrataServer {
        Self::spawn(config, command, extra_env, Stdio::inherit())
    }

    /// `strata serve` with its log written to `log` (for the test to read).
    pub fn start_logging(config: &Path, extra_env: &[(&str, &str)], log: &Path) -> StrataServer {
        let file = std::fs::File::create(log).expect("create the server's log");
        Self::spawn(config, "serve", extra_env, Stdio::from(file))
    }

    fn spawn(config: &Path, command: &str, extra_env: &[(&str, &str)], stderr: Stdio) -> StrataServer {
        let mut cmd = strata(config);
        cmd.args([command, "--address", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start strata");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the serve banner");
        let address: SocketAddr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("strata serve did not print its address; it printed {line:?}")
            });
        StrataServer {
            process: Process {
                child,
                name: format!("strata {command}"),
            },
            address,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("grpc://{}", self.address)
    }
}

/// Runs a Python test script of tests/python with arguments; fails the test with its output.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/python").join(script)).args(args);
    let out = cmd.output().expect("run python");
    check(&out, &cmd, true)
}

/// Held by each heavy end-to-end test (many processes, a broker, millions of events): they
/// run one at a time, so that the deadlines of each fit a loaded 2-core machine.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A certificate authority, and a certificate it signed for 127.0.0.1 and localhost, made
/// with openssl in `dir`: (CA certificate, server certificate, server key), PEM.
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = ["-newkey", "rsa:2048", "-nodes", "-keyout"];
    openssl(
        &[
            &["req", "-x509"],
            &key[..],
            &["ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Strata test CA"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &key[..],
            &["server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// Where scripts/setup.sh puts the tools it fetches ($STRATA_TOOLS, or ~/.cache/strata-tools).
pub fn tools() -> PathBuf {
    std::env::var_os("STRATA_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/strata-tools"))
}
