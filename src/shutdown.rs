//! The shutdown signal: Ctrl-C or SIGTERM (what Docker and Kubernetes send).

use std::future::Future;

/// Registers the signal handlers now (so a SIGTERM that arrives while keyrelay is still starting
/// is a graceful stop, not the default kill) and resolves when one of them fires.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        let terminate = async {
            #[cfg(unix)]
            if let Some(mut stream) = terminate {
                stream.recv().await;
                return;
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            result = ctrl_c => {
                if result.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            () = terminate => {}
        }
        tracing::info!("Shutdown requested; draining in-flight requests");
    }
}
