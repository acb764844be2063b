use clap::Parser;

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
