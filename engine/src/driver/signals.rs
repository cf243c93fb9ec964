//! Ctrl-C and SIGTERM: counted, so that a streaming run stops after the current epoch on the
//! first and at once on the second.

use std::sync::Arc;

use tokio::sync::watch;

use super::events::{Event, Reporter};

use crate::error::{EngineError, Result};

/// Runs `fut` unless the user interrupts: the first Ctrl-C of a streaming run only asks to stop
/// after the current epoch commits (`threshold` 2); a bounded run stops at once (`threshold` 1).
pub(super) async fn interruptible<F: std::future::Future>(
    signals: &mut watch::Receiver<u32>,
    threshold: u32,
    fut: F,
) -> Result<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return Ok(r),
            changed = signals.changed() => {
                if changed.is_err() {
                    return Ok(fut.await);
                }
                if *signals.borrow() >= threshold {
                    return Err(EngineError::Interrupted);
                }
            }
        }
    }
}

/// Counts Ctrl-C / SIGTERM deliveries; a streaming run tells the user what the first one does.
pub(super) fn watch_signals(reporter: Arc<dyn Reporter>, streaming: bool) -> watch::Receiver<u32> {
    let (tx, rx) = watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            interrupt_signal().await;
            let n = *tx.borrow() + 1;
            if n == 1 && streaming {
                reporter.report(Event::notice(
                    "stopping after the current epoch commits (Ctrl-C again to abort it)",
                ));
            }
            if tx.send(n).is_err() {
                return;
            }
        }
    });
    rx
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupt_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
