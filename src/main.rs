use clap::Parser;

// The HTTP workers allocate and free many small buffers per request; glibc's allocator spent
// about a tenth of their CPU on it (arena locks, fastbin consolidation).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli =
        dropd::cli::Cli::parse_from(dropd::cli::litestream_compatible_args(std::env::args_os()));
    match dropd::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dropd: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
