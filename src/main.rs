//! The `keywheel` command: parses arguments, calls the library, and maps the
//! result to a documented exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    keywheel::timings::start();
    cli::install_panic_hook();
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                keywheel::exit::ExitStatus::Usage.code()
            } else {
                0
            });
        }
    };
    cli::init_logging(args.verbose, args.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(keywheel::exit::ExitStatus::Failed.code());
        }
    };
    let status = runtime.block_on(cli::dispatch(args));
    if let Some(summary) = keywheel::timings::summary() {
        eprintln!("{summary}");
    }
    // A question may still be reading stdin on a blocking thread after
    // Ctrl-C; exit without waiting for it.
    runtime.shutdown_background();
    ExitCode::from(status.code())
}
