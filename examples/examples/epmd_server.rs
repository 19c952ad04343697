//! The joerl port mapper daemon, as an example:
//!
//! ```text
//! cargo run --example epmd_server -- [ADDR] [flags]        # run the daemon (default 127.0.0.1:4369)
//! cargo run --example epmd_server -- list --epmd ADDR      # list registered nodes
//! cargo run --example epmd_server -- lookup NAME --epmd ADDR
//! cargo run --example epmd_server -- ping --epmd ADDR
//! ```
//!
//! It is the `epmd_server` binary of `joerl-epmd` (`cargo run --bin epmd_server`),
//! compiled here from the same source file so the two never drift apart.

#[path = "../../joerl-epmd/src/bin/epmd_server.rs"]
mod epmd_server;

fn main() -> anyhow::Result<std::process::ExitCode> {
    epmd_server::main()
}
