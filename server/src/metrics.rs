//! The relay's Prometheus metrics, served as text at `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counters the relay updates as it works. Cheap to update from any task (atomics).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub documents: Gauge,
    pub documents_in_memory: Gauge,
    pub evictions: Counter,
    pub peer_index_reads: Counter,
    pub stored_elsewhere: Counter,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub commits: Counter,
    pub commit_seconds: Histogram,
    pub rejected_frames: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tandem_relay");
        let metrics = Self {
            connections: Gauge::default(),
            documents: Gauge::default(),
            documents_in_memory: Gauge::default(),
            evictions: Counter::default(),
            peer_index_reads: Counter::default(),
            stored_elsewhere: Counter::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            commits: Counter::default(),
            // 50 µs to about 1.6 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            rejected_frames: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open websocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "documents",
            "Documents stored by the relay",
            metrics.documents.clone(),
        );
        registry.register(
            "documents_in_memory",
            "Documents currently loaded in memory",
            metrics.documents_in_memory.clone(),
        );
        registry.register(
            "evictions",
            "Cold documents dropped from memory (they stay on disk)",
            metrics.evictions.clone(),
        );
        registry.register(
            "peer_index_reads",
            "Reconnect digest indexes read from storage (the others were answered from memory)",
            metrics.peer_index_reads.clone(),
        );
        registry.register(
            "stored_elsewhere",
            "Commits of other relays sharing the database, as notified",
            metrics.stored_elsewhere.clone(),
        );
        registry.register(
            "messages_in",
            "Protocol messages received",
            metrics.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Protocol messages sent",
            metrics.messages_out.clone(),
        );
        registry.register("bytes_in", "Bytes received", metrics.bytes_in.clone());
        registry.register("bytes_out", "Bytes sent", metrics.bytes_out.clone());
        registry.register(
            "commits",
            "Store transactions committed",
            metrics.commits.clone(),
        );
        registry.register(
            "commit_seconds",
            "Latency of store commits",
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "rejected_frames",
            "Frames refused as malformed, oversize or not allowed",
            metrics.rejected_frames.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The metrics in the Prometheus / OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics_in_text_format() {
        let metrics = Metrics::new();
        metrics.connections.set(3);
        metrics.bytes_in.inc_by(42);
        let text = metrics.render();
        assert!(text.contains("tandem_relay_connections 3"), "{text}");
        assert!(text.contains("tandem_relay_bytes_in_total 42"), "{text}");
        assert!(
            text.contains("tandem_relay_commit_seconds_bucket"),
            "{text}"
        );
    }
}
