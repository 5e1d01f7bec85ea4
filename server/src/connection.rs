//! One websocket connection: reads binary frames into the hub and writes the hub's frames out,
//! with an idle timeout and a bounded send queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use tokio::sync::{oneshot, watch};

use crate::auth::Identity;
use crate::relay::{Command, Outbound, Outbox, RelayHandle};

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub idle_timeout: Duration,
    pub send_queue_bytes: usize,
    /// Sustained messages per second read from the peer; 0: unlimited.
    pub messages_per_second: u32,
    pub message_burst: u32,
}

/// How many connections each user holds, shared by every upgrade.
#[derive(Debug, Clone)]
pub(crate) struct UserConnections {
    limit: usize,
    held: Arc<Mutex<HashMap<i64, usize>>>,
}

impl UserConnections {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            held: Arc::default(),
        }
    }

    /// A slot for one more connection of `user`, given back when dropped; `None` at the limit.
    pub(crate) fn acquire(&self, user: i64) -> Option<UserSlot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(user).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            user,
            held: self.held.clone(),
        })
    }
}

/// One counted connection of a user.
#[derive(Debug)]
pub(crate) struct UserSlot {
    user: i64,
    held: Arc<Mutex<HashMap<i64, usize>>>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

/// A token bucket over the messages a peer sends: beyond its rate the connection stops reading
/// for a moment, so TCP flow control slows the peer down and nothing is dropped.
#[derive(Debug)]
struct MessageRate {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    slowed: bool,
}

impl MessageRate {
    fn new(limits: &ConnectionLimits) -> Option<Self> {
        if limits.messages_per_second == 0 {
            return None;
        }
        let burst = f64::from(limits.message_burst.max(1));
        Some(Self {
            per_second: f64::from(limits.messages_per_second),
            burst,
            tokens: burst,
            last: Instant::now(),
            slowed: false,
        })
    }

    /// Counts one message; how long to wait before reading the next, if the rate is exceeded.
    fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst) - 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.per_second))
    }
}

pub(crate) async fn run(
    mut socket: WebSocket,
    relay: RelayHandle,
    identity: Identity,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let (outbound, mut frames) = Outbox::new(limits.send_queue_bytes);
    let (reply, connection) = oneshot::channel();
    let open = Command::Open {
        outbound,
        identity,
        reply,
    };
    if relay.commands.send(open).await.is_err() {
        return;
    }
    let Ok(connection) = connection.await else {
        let _ = socket
            .send(close("relay shutting down", close_code::AWAY))
            .await;
        return;
    };
    relay.metrics.connections.inc();
    let mut rate = MessageRate::new(&limits);
    loop {
        tokio::select! {
            incoming = tokio::time::timeout(limits.idle_timeout, socket.recv()) => {
                let message = match incoming {
                    Err(_) => {
                        let _ = socket.send(close("idle timeout", close_code::NORMAL)).await;
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        // Mostly a frame above the size limit; say so before closing, as far as
                        // the socket still lets us.
                        relay.metrics.rejected_frames.inc();
                        let reason = close_reason(&format!("unreadable frame: {e}"));
                        let _ = socket.send(close(&reason, close_code::SIZE)).await;
                        break;
                    }
                    Ok(Some(Ok(message))) => message,
                };
                match message {
                    Message::Binary(frame) => {
                        relay.metrics.messages_in.inc();
                        relay.metrics.bytes_in.inc_by(frame.len() as u64);
                        let frame = Command::Frame { connection, frame: frame.to_vec() };
                        if relay.commands.send(frame).await.is_err() {
                            break;
                        }
                        if let Some(wait) = rate.as_mut().and_then(MessageRate::take) {
                            if let Some(rate) = rate.as_mut().filter(|r| !r.slowed) {
                                rate.slowed = true;
                                tracing::info!(%connection, "message rate limit reached; reading this connection more slowly");
                            }
                            tokio::time::sleep(wait).await;
                        }
                    }
                    Message::Text(_) => {
                        relay.metrics.rejected_frames.inc();
                        let reason = "the sync protocol uses binary frames";
                        let _ = socket.send(close(reason, close_code::UNSUPPORTED)).await;
                        break;
                    }
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            outgoing = frames.recv() => match outgoing {
                Some(Outbound::Frame(frame)) => {
                    let len = frame.len();
                    relay.metrics.messages_out.inc();
                    relay.metrics.bytes_out.inc_by(len as u64);
                    let sent = socket.send(Message::Binary(frame.into())).await;
                    frames.written(len);
                    if sent.is_err() {
                        break;
                    }
                }
                Some(Outbound::Shutdown) => {
                    let _ = socket.send(close("relay shutting down", close_code::AWAY)).await;
                    break;
                }
                Some(Outbound::Close(reason)) => {
                    let _ = socket.send(close(&reason, close_code::POLICY)).await;
                    break;
                }
                None => break,
            },
            _ = shutdown.changed() => {
                let _ = socket.send(close("relay shutting down", close_code::AWAY)).await;
                break;
            }
        }
    }
    relay.metrics.connections.dec();
    let _ = relay.commands.send(Command::Closed { connection }).await;
}

/// A close frame's reason is at most 123 bytes; longer texts are cut at a character boundary.
fn close_reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn close(reason: &str, code: u16) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
