use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = dropd::cli::Cli::parse();
    match dropd::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dropd: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
