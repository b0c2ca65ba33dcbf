//! Port forwarding: `direct-tcpip` channels (`ssh -L`, `ssh -D`) and `tcpip-forward`
//! requests (`ssh -R`), each forwarded connection one Forward stream to the agent
//! holding the student's container, all multiplexed on the proxy's one HTTP/2
//! connection to that agent.
//!
//! Flow control is end to end. Towards the client, bytes are written only as the
//! client's SSH window allows, and the next agent message is read only after that,
//! so HTTP/2's window holds the agent back and the agent stops reading the socket.
//! Towards the container, a full stream to the agent stops this task reading the
//! channel. (russh acknowledges SSH window space as packets arrive, so that last
//! stop holds back the client's whole connection, bounded by russh's channel buffer,
//! not the one channel.)

mod direct;
pub(crate) mod open;
mod remote;
mod splice;

pub(crate) use direct::{direct, Destination};
pub(crate) use remote::{agent_socket_path, remote_forward, Bind, RemoteForwards, X11_BASE_PORT};

/// Client-to-container bytes one SSH connection may hold in the proxy, across its
/// forwards, in KiB: 64 MiB.
///
/// russh acknowledges a client's packets (grants SSH window) as they arrive, not as
/// they are consumed, and a channel whose buffer is full stops the connection's whole
/// loop, window adjustments for the other direction included. A full-duplex stream
/// (an echo, RDP) whose container side waits for its own output to drain would then
/// wait forever. So the proxy keeps reading into this budget while the agent is
/// slow, and only a connection that has this much in flight waits.
pub(crate) const CONNECTION_BUDGET_KIB: usize = 64 * 1024;
