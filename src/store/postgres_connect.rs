//! Where PostgreSQL connections live. tokio-postgres splits a connection into a client and
//! a task that does its I/O, and deadpool-postgres spawns that task on whichever runtime
//! asks for a new connection: here, often an HTTP worker's, on a cache miss or an admin
//! call. Each actix-web worker has a runtime of its own, which ends when the server stops,
//! and takes its connections with it: the pool then hands the graceful stop's last writes
//! (the rate-limit counts, the audit events still pending) connections that close under
//! them (found by a black-box pass on 2 December: "cannot save the rate-limit counts ...
//! connection closed" in half the stops). So every connection is made, and driven, on a
//! runtime of the store's own, which lasts as long as the store: one thread that does
//! nothing but the connections' I/O, so that no other work on a shared thread can hold it
//! up.

use deadpool_postgres::{ConfigConnectImpl, Connect};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The store's runtime for its connections. Shut down in the background when dropped,
/// which a runtime dropped from async code (a test's, a server's at its end) must be.
pub struct ConnectionRuntime {
    /// `None` only once dropped.
    runtime: Option<Runtime>,
    handle: Handle,
}

impl ConnectionRuntime {
    pub fn start() -> std::io::Result<ConnectionRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("postgres-io")
            .enable_all()
            .build()?;
        Ok(ConnectionRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// A connector whose connections live on this runtime.
    pub fn connector<T>(&self, tls: T) -> HomeRuntimeConnect<T> {
        HomeRuntimeConnect {
            tls,
            home: self.handle.clone(),
        }
    }
}

impl Drop for ConnectionRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Makes connections on `home`, whatever runtime asks.
pub struct HomeRuntimeConnect<T> {
    tls: T,
    home: Handle,
}

impl<T> Connect for HomeRuntimeConnect<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(
        &self,
        config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let (tls, config) = (self.tls.clone(), config.clone());
        let home = self.home.clone();
        Box::pin(async move {
            let (made, connected) = oneshot::channel();
            // The socket, too, must be made on the home runtime: it belongs to the reactor
            // of the runtime it was made on.
            let driver = home.spawn({
                let (tls, config) = (tls.clone(), config.clone());
                async move {
                    match config.connect(tls).await {
                        Ok((client, connection)) => {
                            if made.send(Ok(client)).is_ok() {
                                if let Err(error) = connection.await {
                                    tracing::warn!(target: "deadpool.postgres", %error, "connection error");
                                }
                            }
                        }
                        Err(error) => {
                            let _ = made.send(Err(error));
                        }
                    }
                }
            });
            // deadpool gives up on a connection attempt by dropping this future (its
            // create timeout, the caller's deadline): the attempt must end with it, not
            // go on on the home runtime, where attempts would pile up through an outage.
            let attempt = AbortOnDrop(Some(driver.abort_handle()));
            match connected.await {
                Ok(Ok(client)) => {
                    attempt.disarm();
                    Ok((client, driver))
                }
                Ok(Err(error)) => Err(error),
                // The home runtime is shutting down: the asker's own, as deadpool would.
                Err(_) => {
                    let own_runtime = ConfigConnectImpl { tls };
                    own_runtime.connect(&config).await
                }
            }
        })
    }
}

/// Aborts a task when dropped, unless disarmed.
struct AbortOnDrop(Option<AbortHandle>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
