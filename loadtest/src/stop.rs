//! Ctrl-C: the first one stops the run and reports what was measured; a
//! second one exits at once.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Stop {
    /// Becomes true once, on the first Ctrl-C; lives for the whole run.
    requested: watch::Receiver<bool>,
}

impl Stop {
    pub fn on_ctrl_c() -> Stop {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            eprintln!("\ninterrupted: stopping and reporting what was measured (Ctrl-C again to quit now)");
            let _ = tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(i32::from(crate::exit::EXIT_INTERRUPTED));
            }
        });
        Stop { requested: rx }
    }

    pub fn is_stopped(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolves when a stop is requested (never, if it never is).
    pub async fn stopped(&self) {
        let mut rx = self.requested.clone();
        if rx.wait_for(|stopped| *stopped).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
