//! External services a test may need, and what happens when one is missing: on a laptop the
//! test prints one line and passes without running; in CI (the `CI` environment variable set)
//! it fails, so CI proves everything.
//!
//! libtest cannot mark a test ignored at run time, so [`require_service!`](crate::require_service)
//! returns from the test early instead.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a TCP probe waits for the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Where binaries are looked for besides `PATH` (system daemons often live in `sbin`, which
/// is not on a normal user's `PATH`).
const EXTRA_BIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Something outside the workspace that a test needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Service {
    /// RabbitMQ at 127.0.0.1:5672 (guest/guest), or at `SWITCHBOARD_TEST_RABBITMQ` (`host:port`).
    RabbitMq,
    /// NATS with JetStream at 127.0.0.1:4222, or at `SWITCHBOARD_TEST_NATS`.
    Nats,
    /// PostgreSQL at 127.0.0.1:5432 (user `postgres`, database `test`, trust auth), or at
    /// `SWITCHBOARD_TEST_POSTGRES`.
    Postgres,
    /// The `nats-server` binary, for tests that start (and kill) private servers.
    NatsServer,
    /// The `python3` binary.
    Python,
    /// A Chromium browser (`chromium`, Debian's package), for the dashboard's browser tests.
    Chromium,
    /// ChromeDriver (`chromedriver`, Debian's `chromium-driver`), which drives it.
    ChromeDriver,
}

/// How a service is found.
enum Probe {
    /// Something listens on the address in the environment variable, or on the default.
    Tcp { env: &'static str, default: &'static str },
    /// The executable the environment variable names, or else one of this name on `PATH` or
    /// in [`EXTRA_BIN_DIRS`].
    Binary { env: &'static str, name: &'static str },
}

impl Service {
    /// The service's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Service::RabbitMq => "RabbitMQ",
            Service::Nats => "NATS",
            Service::Postgres => "PostgreSQL",
            Service::NatsServer => "nats-server",
            Service::Python => "python3",
            Service::Chromium => "chromium",
            Service::ChromeDriver => "chromedriver",
        }
    }

    fn probe(self) -> Probe {
        match self {
            Service::RabbitMq => Probe::Tcp { env: "SWITCHBOARD_TEST_RABBITMQ", default: "127.0.0.1:5672" },
            Service::Nats => Probe::Tcp { env: "SWITCHBOARD_TEST_NATS", default: "127.0.0.1:4222" },
            Service::Postgres => Probe::Tcp { env: "SWITCHBOARD_TEST_POSTGRES", default: "127.0.0.1:5432" },
            Service::NatsServer => Probe::Binary { env: "SWITCHBOARD_TEST_NATS_SERVER", name: "nats-server" },
            Service::Python => Probe::Binary { env: "SWITCHBOARD_TEST_PYTHON", name: "python3" },
            Service::Chromium => Probe::Binary { env: "SWITCHBOARD_TEST_CHROMIUM", name: "chromium" },
            Service::ChromeDriver => {
                Probe::Binary { env: "SWITCHBOARD_TEST_CHROMEDRIVER", name: "chromedriver" }
            }
        }
    }

    /// The address the tests use for a network service: its environment variable if set,
    /// else the default.
    ///
    /// # Panics
    /// For a binary ([`Service::NatsServer`], [`Service::Python`]), or if the environment
    /// variable is not a resolvable `host:port`.
    pub fn addr(self) -> SocketAddr {
        let Probe::Tcp { env, default } = self.probe() else {
            panic!("{} is a binary, not a network service", self.name());
        };
        let value = std::env::var(env).unwrap_or_else(|_| default.to_owned());
        value
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("{env}={value:?} is not a host:port"))
    }
}

/// A service that was found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Found {
    /// A network service accepts connections at this address.
    Listening(SocketAddr),
    /// The binary at this path.
    Binary(PathBuf),
}

impl Found {
    /// The binary's path.
    ///
    /// # Panics
    /// If a network service was found.
    pub fn path(&self) -> &Path {
        match self {
            Found::Binary(path) => path,
            Found::Listening(addr) => panic!("a network service at {addr} has no path"),
        }
    }
}

/// Why a service is missing.
#[derive(Debug)]
pub struct Missing {
    service: Service,
    why: String,
    /// What would make it available: "start it", "install it".
    remedy: &'static str,
}

/// The RabbitMQ URL of the tests: guest/guest at [`Service::RabbitMq`]'s address, vhost `/`.
pub fn rabbitmq_url() -> String {
    format!("amqp://guest:guest@{}/%2f", Service::RabbitMq.addr())
}

/// The NATS URL of the tests, at [`Service::Nats`]'s address.
pub fn nats_url() -> String {
    format!("nats://{}", Service::Nats.addr())
}

/// The PostgreSQL URL of the tests: user `postgres`, database `test`, at
/// [`Service::Postgres`]'s address.
pub fn postgres_url() -> String {
    format!("postgres://postgres@{}/test", Service::Postgres.addr())
}

/// Whether a value of the `CI` environment variable means "this is CI": set, not empty, and
/// not `0` or `false` (any case).
pub fn ci_is_set(value: Option<&str>) -> bool {
    value.map(str::trim).is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Finds `service`. When it is missing: in CI (see [`ci_is_set`]) this panics, so the test
/// fails; elsewhere it prints one line to stderr and returns `None`, and the test should
/// return (which is what [`require_service!`](crate::require_service) does).
///
/// # Panics
/// If the service is missing and `CI` is set.
pub fn require(service: Service) -> Option<Found> {
    settle(find(service), ci_is_set(std::env::var("CI").ok().as_deref()))
}

/// Returns from the calling test (after one line on stderr) unless the [`Service`] named is
/// available; fails the test instead when `CI` is set. Evaluates to the [`Found`] service.
///
/// ```
/// # async fn publishes_to_rabbitmq() {
/// switchboard_testkit::require_service!(RabbitMq);
/// // ... talk to RabbitMQ at switchboard_testkit::rabbitmq_url()
/// # }
/// ```
#[macro_export]
macro_rules! require_service {
    ($service:ident) => {
        match $crate::require($crate::Service::$service) {
            ::core::option::Option::Some(found) => found,
            ::core::option::Option::None => return,
        }
    };
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is {} ({})", self.service.name(), self.why, self.remedy)
    }
}

/// Looks for `service` without deciding what its absence means (for a runner that lists
/// tests, such as the conformance suite's); a test calls [`require`] instead.
///
/// # Errors
/// [`Missing`] says what is missing and how to get it.
pub fn find(service: Service) -> Result<Found, Missing> {
    match service.probe() {
        Probe::Tcp { .. } => connect(service, service.addr()),
        Probe::Binary { env, name } => match std::env::var_os(env).filter(|p| !p.is_empty()) {
            Some(path) if is_executable(Path::new(&path)) => Ok(Found::Binary(path.into())),
            Some(path) => Err(Missing {
                service,
                why: format!("not at {} ({env})", Path::new(&path).display()),
                remedy: "install it",
            }),
            None => lookup(service, name, std::env::var_os("PATH").as_deref()),
        },
    }
}

fn connect(service: Service, addr: SocketAddr) -> Result<Found, Missing> {
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(_) => Ok(Found::Listening(addr)),
        Err(_) => Err(Missing { service, why: format!("not reachable at {addr}"), remedy: "start it" }),
    }
}

fn lookup(service: Service, name: &str, path: Option<&std::ffi::OsStr>) -> Result<Found, Missing> {
    let on_path = path.map(std::env::split_paths).into_iter().flatten();
    let dirs: Vec<PathBuf> = on_path.chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from)).collect();
    match dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p)) {
        Some(p) => Ok(Found::Binary(p)),
        None => Err(Missing {
            service,
            why: format!("not installed (looked on PATH and in {})", EXTRA_BIN_DIRS.join(", ")),
            remedy: "install it",
        }),
    }
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// The policy: what is missing fails the test in CI and skips it elsewhere.
fn settle(found: Result<Found, Missing>, ci: bool) -> Option<Found> {
    let Missing { service, why, remedy } = match found {
        Ok(found) => return Some(found),
        Err(missing) => missing,
    };
    let name = service.name();
    assert!(!ci, "CI is set and {name} is {why}");
    // Straight to stderr rather than `eprintln!`, which libtest captures and shows only for
    // failing tests: a skip should be seen.
    let test = std::thread::current().name().map(|t| format!(" {t}")).unwrap_or_default();
    let _ = writeln!(
        std::io::stderr(),
        "skipping{test}: {name} {why} ({remedy}, or run in CI to make this a failure)"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port nothing listens on (bound, then released).
    fn closed_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        addr
    }

    #[test]
    fn ci_flag_parsing() {
        for on in ["1", "true", "TRUE", "yes", " 1 "] {
            assert!(ci_is_set(Some(on)), "{on:?}");
        }
        for off in [None, Some(""), Some("  "), Some("0"), Some("false"), Some("False")] {
            assert!(!ci_is_set(off), "{off:?}");
        }
    }

    #[test]
    fn a_closed_port_is_skipped_outside_ci() {
        let found = connect(Service::RabbitMq, closed_port());
        let missing = found.as_ref().expect_err("nothing listens");
        assert!(missing.why.starts_with("not reachable at 127.0.0.1:"), "{missing:?}");
        assert_eq!(settle(found, false), None);
    }

    #[test]
    #[should_panic(expected = "CI is set and RabbitMQ is not reachable at 127.0.0.1:")]
    fn a_closed_port_fails_in_ci() {
        settle(connect(Service::RabbitMq, closed_port()), true);
    }

    #[test]
    fn a_listening_port_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        assert_eq!(settle(connect(Service::Nats, addr), true), Some(Found::Listening(addr)));
    }

    #[test]
    fn a_missing_binary_is_skipped_outside_ci_and_fails_in_ci() {
        let empty = tempfile_free_dir();
        let found = lookup(Service::NatsServer, "no-such-binary-for-switchboard", Some(empty.as_os_str()));
        assert!(found.as_ref().is_err_and(|m| m.why.starts_with("not installed")), "{found:?}");
        assert_eq!(settle(found, false), None);
        let again = lookup(Service::NatsServer, "no-such-binary-for-switchboard", None);
        let ci = std::panic::catch_unwind(|| settle(again, true)).expect_err("fails in CI");
        let text = ci.downcast_ref::<String>().expect("a formatted message");
        assert!(text.starts_with("CI is set and nats-server is not installed"), "{text}");
    }

    #[test]
    fn a_binary_on_the_path_is_found() {
        // `sh` is on every Unix CI machine and laptop.
        let found = lookup(Service::Python, "sh", std::env::var_os("PATH").as_deref());
        assert!(matches!(&found, Ok(Found::Binary(p)) if p.ends_with("sh")), "{found:?}");
    }

    fn tempfile_free_dir() -> PathBuf {
        std::env::temp_dir().join("switchboard-testkit-no-binaries-here")
    }
}
