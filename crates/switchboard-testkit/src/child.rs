//! Crash tests run a part of themselves as a child process and SIGKILL it: [`Child::spawn`]
//! runs this test binary again with only one test selected, and waits for it to print
//! `READY`.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A child process running one test of this binary; killed (SIGKILL) when dropped, so a
/// failing test never leaves it behind.
pub struct Child {
    process: std::process::Child,
    ready: Option<JoinHandle<bool>>,
}

/// This test binary. On Linux through `/proc/self/exe`: when cargo rebuilds the binary while
/// the test runs, the file at `current_exe()` is replaced, but the running one is still
/// reachable there.
fn this_binary() -> PathBuf {
    let proc_self = PathBuf::from("/proc/self/exe");
    if proc_self.exists() { proc_self } else { std::env::current_exe().expect("the test binary's path") }
}

impl Child {
    /// Runs test `test` (its full path, `module::name`) of this binary with `env` set; its
    /// stderr goes to this test's.
    ///
    /// # Panics
    /// If the process cannot start.
    pub fn spawn(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> Child {
        let mut command = Command::new(this_binary());
        command.args(["--exact", test, "--nocapture", "--test-threads=1"]);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut process = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {test} as a child: {e}"));
        let stdout = process.stdout.take().expect("a piped stdout");
        // libtest prints `test … ... ` before the child's own output on the same line.
        let ready = std::thread::spawn(move || {
            std::io::BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.ends_with("READY"))
        });
        Child { process, ready: Some(ready) }
    }

    /// Waits (blocking the thread) until the child printed `READY`, at most `within`.
    pub fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.ready.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        match self.ready.take_if(|r| r.is_finished()) {
            Some(r) => r.join().unwrap_or(false),
            None => false,
        }
    }

    /// True when the child has exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.try_wait().ok().flatten()
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}
