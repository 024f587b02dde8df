//! A query-api served in-process on a free port, for the tests of the read path and the viewer
//! and for the bench.

use logfleet::config::Settings;
use logfleet::query::QueryService;
use tokio::sync::oneshot;

/// A query-api on `127.0.0.1:0`, stopped by [`Api::stop`] (or [`Api::begin_stop`]) as SIGTERM
/// stops the binary.
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Resolves the server's shutdown future.
    stop: Option<oneshot::Sender<()>>,
    /// The server, returning once every response is done.
    join: tokio::task::JoinHandle<Result<(), query_api::ApiError>>,
}

impl Api {
    /// Serves `settings` as the binary does.
    pub async fn start(settings: &Settings) -> Self {
        Self::serve(QueryService::connect(settings).await.unwrap()).await
    }

    /// Serves a read path the test connected (with fault hooks, say).
    pub async fn serve(svc: QueryService) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(query_api::serve(svc, listener, async {
            let _ = rx.await;
        }));
        Self {
            base,
            stop: Some(tx),
            join,
        }
    }

    /// Starts the shutdown (SIGTERM) without waiting for the server to finish.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the server and waits until it has finished, cleanly.
    pub async fn stop(mut self) {
        self.begin_stop();
        self.join.await.unwrap().expect("query-api stops cleanly");
    }
}
