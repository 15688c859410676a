//! `coachlibre`: the one binary. `serve` runs the platform; the other commands administer it
//! from the server's shell (tenants, users, API keys, migrations, effective configuration).

mod chat;
mod cli;
mod jobs;
mod models;
mod workflow;

use clap::Parser;

/// mimalloc instead of glibc's allocator: rows decoded on the database threads and freed on
/// the runtime's made glibc consolidate its arenas constantly (35 % less CPU per agent turn,
/// see docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Started by the server to read one untrusted file (see coachlibre_knowledge::sandbox).
    if let Some(code) = coachlibre_knowledge::sandbox::child_main() {
        return code;
    }
    if let Ok(exe) = std::env::current_exe() {
        coachlibre_knowledge::sandbox::isolate_with(exe);
    }
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
