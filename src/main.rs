use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = dcgan_wgpu::cli::Cli::parse();
    match dcgan_wgpu::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
