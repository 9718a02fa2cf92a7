use clap::Parser;

fn main() -> std::process::ExitCode {
    // Mesa prints "error: XDG_RUNTIME_DIR is invalid" on every device open when it is
    // unset (containers, CI); compute needs no display, so any folder silences it.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
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
