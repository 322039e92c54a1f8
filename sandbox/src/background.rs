//! A sandbox on a thread of its own, as the tests and benches of `cosigner` run it in place of a
//! separate process: its own runtime, started from the same arguments as `cosigner-sandbox serve`,
//! and stopped, every connection cut as a killed process's would be, by [`Background::kill`] or
//! on drop.

use std::thread::JoinHandle;

use clap::Parser as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
use crate::server::{Sandbox, serve};

/// A running sandbox: where it listens and what it holds.
pub struct Background {
    /// `http://ADDR`, as `serve` prints it.
    pub url: String,
    /// The sandbox itself: its admin state (pending items, faults, what it received).
    pub sandbox: Sandbox,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts a sandbox as `cosigner-sandbox serve ARGS` would (`--listen 127.0.0.1:0` unless
    /// `args` has a `--listen`), and returns once it accepts connections; the error is what the
    /// command would have printed.
    pub fn start(args: &[&str]) -> Result<Self, String> {
        let listen: &[&str] = if args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let argv = ["cosigner-sandbox", "serve"]
            .iter()
            .chain(listen)
            .chain(args);
        let Command::Serve(serve_args) = Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        else {
            return Err("not a serve command".into());
        };
        // All of it on the sandbox's own thread: a caller inside a runtime cannot block on
        // another one.
        let (ready, started) = std::sync::mpsc::channel::<Result<(Sandbox, String), String>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sandbox".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("sandbox")
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(format!("cannot start the sandbox's runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let (sb, listener) = match crate::cli::prepare(serve_args).await {
                        Ok(p) => p,
                        Err(f) => {
                            let _ = ready.send(Err(f.report()));
                            return;
                        }
                    };
                    let url = match listener.local_addr() {
                        Ok(addr) => format!("http://{addr}"),
                        Err(e) => {
                            let _ = ready.send(Err(format!("the sandbox's address: {e}")));
                            return;
                        }
                    };
                    let _ = ready.send(Ok((sb.clone(), url)));
                    tokio::select! {
                        _ = serve(listener, sb, CancellationToken::new()) => {}
                        _ = stopped => {}
                    }
                });
                // Every connection task goes with the runtime, as with a killed process.
                runtime.shutdown_background();
            })
            .map_err(|e| format!("cannot start the sandbox's thread: {e}"))?;
        let (sandbox, url) = started
            .recv()
            .map_err(|_| "the sandbox's thread ended before it listened".to_string())??;
        Ok(Self {
            url,
            sandbox,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the sandbox: the listener closes and every connection is cut. Returns once done.
    pub fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}
