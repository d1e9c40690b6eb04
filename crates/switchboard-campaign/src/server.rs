//! `switchboard serve` as a child process on fixed loopback ports.
//!
//! The ports are chosen once (bind port 0, note the port, let it go) and passed explicitly on
//! every start, so a server started again after a SIGKILL listens where the clients already
//! reconnect to. The server's logs go to a file (appended across restarts) that errors quote.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::procfs;

/// How long a server may take to print its banner.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A restart right after a SIGKILL can race the kernel releasing the old listener; this many
/// attempts, 100 ms apart, absorb that.
const START_ATTEMPTS: u32 = 20;

/// `switchboard` next to the running executable (where cargo puts both binaries).
///
/// # Errors
/// The path of the current executable is unknown.
pub fn default_server_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the current executable")?;
    let dir = exe.parent().context("the current executable has no directory")?;
    // Test binaries live one level down, in target/<profile>/deps.
    let dir = if dir.ends_with("deps") { dir.parent().unwrap_or(dir) } else { dir };
    Ok(dir.join("switchboard"))
}

/// How to start the server under test; the same spec starts it again after a kill.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// The `switchboard` binary.
    pub bin: PathBuf,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// REST address, fixed across restarts.
    pub http: SocketAddr,
    /// gRPC address, fixed across restarts.
    pub grpc: SocketAddr,
    /// The server's stderr (its logs), appended to by every start.
    pub log: PathBuf,
    /// Raise the server's soft open-files limit to this, or to the hard limit if that is
    /// lower (through `sh -c 'ulimit -Sn'`, as the workspace forbids the `unsafe` a
    /// `setrlimit` call would need).
    pub nofile: Option<u64>,
}

impl ServerSpec {
    /// A spec on two free loopback ports, the server's logs appended to `log`.
    ///
    /// # Errors
    /// No free port could be bound.
    pub fn new(bin: PathBuf, data_dir: PathBuf, log: PathBuf) -> anyhow::Result<ServerSpec> {
        Ok(ServerSpec { bin, data_dir, http: free_port()?, grpc: free_port()?, log, nofile: None })
    }

    /// `http://<rest address>`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Starts the server and waits for its banner.
    ///
    /// # Errors
    /// The binary does not start, exits, or prints no banner in time; the error quotes the
    /// end of the server's log.
    pub async fn start(&self) -> anyhow::Result<ServerProcess> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match self.try_start().await {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let e = last.unwrap_or_else(|| anyhow::anyhow!("no start attempt"));
        Err(e.context(format!(
            "starting {} (last lines of {}):\n{}",
            self.bin.display(),
            self.log.display(),
            log_tail(&self.log)
        )))
    }

    async fn try_start(&self) -> anyhow::Result<ServerProcess> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = match self.nofile {
            Some(wanted) => {
                // Only the soft limit: raising the hard one needs CAP_SYS_RESOURCE, which a
                // container's root may lack. The report shows the limit the server got.
                let hard = procfs::nofile_limits("self")?.1.parse::<u64>().unwrap_or(u64::MAX);
                let n = wanted.min(hard);
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("ulimit -Sn {n} && exec \"$0\" \"$@\"")).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http-addr")
            .arg(self.http.to_string())
            .arg("--grpc-addr")
            .arg(self.grpc.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command.spawn().with_context(|| format!("spawning {}", self.bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let banner = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .context("no banner within the start timeout")?
            .context("reading the server's stdout")?;
        let Some(banner) = banner else {
            let status = child.wait().await.context("waiting for the server")?;
            bail!("the server exited before serving ({status})");
        };
        if !banner.contains("switchboard serving") || !banner.contains(&self.grpc.to_string()) {
            bail!("unexpected banner: {banner:?}");
        }
        // Keep reading so the server never blocks on a full stdout pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerProcess { child, pid, start_time: started.elapsed() })
    }
}

/// A running server.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pid: u32,
    start_time: Duration,
}

impl ServerProcess {
    /// The server's process id (the same after `sh -c 'exec …'`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How long the start took, banner included (recovery time after a crash).
    pub fn start_time(&self) -> Duration {
        self.start_time
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, then waits for the process to be gone.
    ///
    /// # Errors
    /// The signal could not be sent.
    pub async fn sigkill(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("SIGKILL of the server")
    }

    /// SIGTERM (a graceful shutdown), then waits for the exit.
    ///
    /// # Errors
    /// The signal could not be sent or the server did not exit within 30 s.
    pub async fn sigterm(mut self) -> anyhow::Result<ExitStatus> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.pid);
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("the server did not exit within 30 s of SIGTERM")?
            .context("waiting for the server")
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    listener.local_addr().context("reading a bound address")
}

/// The last lines of a log, for errors.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
