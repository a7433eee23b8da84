//! Where PostgreSQL connections live. tokio-postgres splits a connection into a client and
//! a task that does its I/O, and deadpool-postgres spawns that task on whichever runtime
//! asks for a new connection: here, often an HTTP worker's, on a cache miss or an admin
//! call. Each actix-web worker has a runtime of its own, which ends when the server stops,
//! and takes its connections with it: the pool then hands the graceful stop's last writes
//! (the rate-limit counts, the audit events still pending) connections that close under
//! them (found by a black-box pass on 2 December: "cannot save the rate-limit counts ...
//! connection closed" in half the stops). So every connection is made, and driven, on one
//! runtime that lasts until the end: the one the store was built on.

use deadpool_postgres::{ConfigConnectImpl, Connect};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Makes connections on `home`, whatever runtime asks.
pub struct HomeRuntimeConnect<T> {
    tls: T,
    home: Handle,
}

impl<T> HomeRuntimeConnect<T> {
    /// Connections at home on the current runtime; `None` outside one (the asker's runtime
    /// then drives each connection, as deadpool's own `ConfigConnectImpl` does).
    pub fn new(tls: T) -> Option<HomeRuntimeConnect<T>> {
        Some(HomeRuntimeConnect {
            tls,
            home: Handle::try_current().ok()?,
        })
    }
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
            match connected.await {
                Ok(Ok(client)) => Ok((client, driver)),
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
