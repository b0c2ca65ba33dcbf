//! What the labssh agent and labssh-init, the helper running as PID 1 in every
//! container, share: the wire protocol on the helper's socket ([`wire`]), name
//! resolution as a container sees it ([`resolve`]) and its listening sockets
//! ([`sockets`]), so the agent entering a container itself resolves and finds
//! services exactly as the helper does.
//!
//! std only: labssh-init is a static binary that needs nothing from the image.

pub mod resolve;
pub mod sockets;
pub mod wire;
