//! `switchboard serve`: configuration from a TOML file, environment variables and flags (in
//! that order of precedence, lowest first), then the server until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchboard_server::{Server, ServerConfig, TlsConfig};

/// Flags of `switchboard serve`; each also reads an environment variable.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (see `ServerConfig`).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address for REST, GraphQL and metrics.
    #[arg(long, env = "SWITCHBOARD_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// Address for gRPC.
    #[arg(long, env = "SWITCHBOARD_GRPC_ADDR")]
    grpc_addr: Option<SocketAddr>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

/// Builds the configuration and serves until a signal arrives.
pub(crate) async fn run(args: ServeArgs, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(a) = args.http_addr {
        config.http_addr = a;
    }
    if let Some(a) = args.grpc_addr {
        config.grpc_addr = a;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(TlsConfig { cert, key });
    }
    if args.print_config {
        println!("{}", toml::to_string_pretty(&config).context("rendering the configuration")?);
        return Ok(());
    }
    let server = Server::start(config).await?;
    println!(
        "switchboard serving: http {} (REST /v1, GraphQL /graphql, /metrics), gRPC {}",
        server.http_addr(),
        server.grpc_addr()
    );
    server.run_until_signal().await?;
    Ok(())
}
