//! One websocket connection: reads binary frames into the hub and writes the hub's frames out,
//! with an idle timeout and a bounded send queue.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use tokio::sync::{oneshot, watch};

use crate::auth::Identity;
use crate::relay::{Command, Outbound, Outbox, RelayHandle};

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub idle_timeout: Duration,
    pub send_queue_bytes: usize,
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
