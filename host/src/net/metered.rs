//! A transport that counts what it carries: frames and bytes each way, and
//! the connection among the open ones of its transport (see
//! [`crate::metrics`]).

use super::{Inbound, Transport};
use crate::metrics::TransportMetrics;
use std::future::Future;
use std::io;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// `T`, counted.
pub struct Metered<T> {
    inner: T,
    metrics: TransportMetrics,
}

impl<T: Transport> Metered<T> {
    /// Counts `inner` as an open connection of `metrics`' transport until
    /// dropped.
    pub fn new(inner: T, metrics: TransportMetrics) -> Self {
        metrics.open.inc();
        Self { inner, metrics }
    }
}

impl<T> Drop for Metered<T> {
    fn drop(&mut self) {
        self.metrics.open.dec();
    }
}

impl<T: Transport> Transport for Metered<T> {
    async fn recv(&mut self) -> Option<io::Result<Inbound>> {
        let got = self.inner.recv().await;
        if let Some(Ok(Inbound::Data(bytes))) = &got {
            self.metrics.frames_in.inc();
            self.metrics.bytes_in.inc_by(bytes.len() as u64);
        }
        got
    }

    fn feed(&mut self, frame: Utf8Bytes) -> impl Future<Output = io::Result<()>> + Send {
        self.metrics.frames_out.inc();
        self.metrics.bytes_out.inc_by(frame.len() as u64);
        self.inner.feed(frame)
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.flush()
    }

    fn heartbeat(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.heartbeat()
    }

    fn close(&mut self) -> impl Future<Output = ()> + Send {
        self.inner.close()
    }

    fn abort(&mut self) {
        self.inner.abort();
    }
}
